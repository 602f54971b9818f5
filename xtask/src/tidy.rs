//! `cargo xtask tidy`: a fast check of the invariants of `ARCHITECTURE.md` that can be read off
//! the manifests and the sources, without building anything. `cargo xtask ci` runs it first.
//!
//! It checks:
//!
//! 1. **Dependency direction** (`../shared/DESIGN.md`), from `cargo metadata --no-deps`: each
//!    workspace crate's normal dependencies on workspace crates are in [`ALLOWED_EDGES`] (a
//!    crate missing from that table fails, so that a new crate's place is decided there), and
//!    none is in [`FORBIDDEN_EXTERNAL`] — `rill-core` never on actix, tokio or fjall,
//!    `rill-api` never on actix or tokio, the simulator never on actix. Dev- and
//!    build-dependencies are not checked.
//! 2. **No clock, thread or file in `rill-core`, no wall clock in the simulator**, and
//! 3. **no `.unwrap()` in `rill-log`, `rill-store`, `rill-formats` and `rill-files`** (they
//!    never panic on I/O or bad input):
//!    [`RULES`], a plain substring scan of production code — see [`code_lines`] for what is
//!    skipped (comments, `#[cfg(test)]` items, `tests.rs` files and `tests/` directories).
//!    Each exception is an [`ALLOWED`] entry with its reason; an entry that no longer matches
//!    anything fails too, so the list only ever shrinks to what is still needed.
//! 4. **Every source file starts with a module doc comment** (`//!`), in `crates/*/src`,
//!    `sim/src` and `xtask/src`: a file says what it is for before it says anything else.
//!
//! Why here and not in clippy or a test: these are facts about the workspace's layout, checked
//! in well under a second before the slow steps start, and each violation names the crate,
//! file and line to fix.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

/// The workspace crates each workspace crate may depend on (normal dependencies). This is the
/// dependency direction of `../shared/DESIGN.md`; widening a row is a design decision.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("rill-core", &[]),
    ("rill-store", &["rill-core"]),
    // rill-log on rill-store is planned.
    ("rill-log", &["rill-core", "rill-store"]),
    ("rill-runtime", &["rill-core", "rill-store", "rill-log"]),
    // The job description: it builds graphs, and runs nothing.
    ("rill-api", &["rill-core", "rill-store", "rill-log"]),
    // A connector: its commit protocol is rill-core's, its builders extend rill-api's streams.
    ("rill-postgres", &["rill-core", "rill-api"]),
    ("rill-redis", &["rill-core", "rill-api"]),
    ("rill-nats", &["rill-core", "rill-api"]),
    (
        "rill",
        &[
            "rill-core",
            "rill-store",
            "rill-log",
            "rill-runtime",
            "rill-api",
        ],
    ),
    // The simulator drives the cores itself: never the runtime (actix) nor `rill` on it; its
    // jobs are described with the API, as users describe theirs.
    (
        "rill-sim",
        &["rill-core", "rill-store", "rill-log", "rill-api"],
    ),
    // Tools for users' operators: they drive the cores as the subtask does.
    ("rill-testing", &["rill-core"]),
    // The CLI reads logs and checkpoint stores; it runs no job.
    ("rill-cli", &["rill-core", "rill-store", "rill-log"]),
    // Records to and from bytes: plain serde, no engine, so that any connector can use it.
    ("rill-formats", &[]),
    // Connectors to files: sources over the core's contract, added to the API's environment
    // by an extension trait; never a dependency of the core or the API.
    ("rill-files", &["rill-core", "rill-api", "rill-formats"]),
    // Automation runs cargo; it links none of the engine.
    ("xtask", &[]),
];

/// External crates a workspace crate must never depend on; each name also stands for its
/// family (`actix` forbids `actix-rt` too).
const FORBIDDEN_EXTERNAL: &[(&str, &[&str], &str)] = &[
    (
        "rill-core",
        &["actix", "tokio", "fjall"],
        "rill-core is the I/O-free protocol: no actor system, no async runtime, no storage",
    ),
    (
        "rill-api",
        &["actix", "tokio"],
        "the API describes jobs for every executor, the simulator's too: no actor system, no async runtime",
    ),
    (
        "rill-files",
        &["actix", "tokio"],
        "a file source reads in its poll, as the log source does: it runs on any driver, the simulator's too",
    ),
    (
        "rill-sim",
        &["actix"],
        "the simulator schedules the cores itself; an actor system would bring threads and time",
    ),
];

/// Substrings that must not appear in the production code under some directories.
struct Rule {
    name: &'static str,
    /// Directories scanned (recursively), relative to the workspace root.
    dirs: &'static [&'static str],
    patterns: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        name: "core-io",
        dirs: &["crates/rill-core/src"],
        // `thread::spawn` catches `std::thread::spawn` and `use std::thread; thread::spawn`.
        patterns: &[
            "SystemTime",
            "Instant::now",
            "thread::spawn",
            "std::fs",
            "File::",
        ],
        why: "rill-core reads no clock, spawns no thread and touches no file: its driver passes time in and does the I/O",
    },
    Rule {
        name: "sim-clock",
        dirs: &["sim/src"],
        patterns: &["SystemTime", "Instant::now"],
        why: "a simulated run is a function of its seed: it reads the virtual clock, never the wall clock",
    },
    Rule {
        name: "no-unwrap",
        dirs: &[
            "crates/rill-log/src",
            "crates/rill-store/src",
            "crates/rill-formats/src",
            "crates/rill-files/src",
        ],
        patterns: &[".unwrap()"],
        why: "the log, the store, the formats and the file connectors never panic on I/O or bad input: return an error naming what is at fault",
    },
];

/// An exception to a [`Rule`]: `pattern` may appear in `file`, for `reason`.
struct Allowed {
    rule: &'static str,
    file: &'static str,
    pattern: &'static str,
    reason: &'static str,
}

const ALLOWED: &[Allowed] = &[Allowed {
    rule: "sim-clock",
    file: "sim/src/main.rs",
    pattern: "Instant::now",
    reason: "the binary times each scenario and the whole invocation for its progress output; \
             no run reads it",
}];

/// One thing to fix: where, and what.
struct Violation {
    /// A path relative to the workspace root, or a crate's manifest.
    file: String,
    line: Option<usize>,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut violations = check_dependencies(root)?;
    violations.extend(check_rules(root)?);
    violations.extend(check_module_docs(root)?);
    for violation in &violations {
        eprintln!("{violation}");
    }
    if !violations.is_empty() {
        bail!(
            "tidy: {} violation(s) of the architecture invariants (see xtask/src/tidy.rs)",
            violations.len()
        );
    }
    eprintln!(
        "tidy: the architecture invariants hold ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Check 1: every workspace crate's normal dependencies against [`ALLOWED_EDGES`] and
/// [`FORBIDDEN_EXTERNAL`].
fn check_dependencies(root: &Path) -> anyhow::Result<Vec<Violation>> {
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    let packages = metadata["packages"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let manifest = package["manifest_path"].as_str().unwrap_or("?");
        let manifest = Path::new(manifest)
            .strip_prefix(root)
            .map_or_else(|_| manifest.to_owned(), |p| p.display().to_string());
        let manifest_text = std::fs::read_to_string(root.join(&manifest)).unwrap_or_default();
        let violation = |dependency: &str, message: String| Violation {
            file: manifest.clone(),
            line: manifest_line(&manifest_text, dependency),
            message,
        };
        let Some((_, allowed)) = ALLOWED_EDGES.iter().find(|(crate_, _)| *crate_ == name) else {
            violations.push(violation(
                "",
                format!(
                    "workspace crate {name} has no row in ALLOWED_EDGES (xtask/src/tidy.rs): \
                     decide which workspace crates it may depend on"
                ),
            ));
            continue;
        };
        let normal = package["dependencies"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str());
        for dependency in normal {
            if members.contains(dependency) && !allowed.contains(&dependency) {
                violations.push(violation(
                    dependency,
                    format!(
                        "{name} depends on {dependency}, against the dependency direction \
                         (it may depend on: {})",
                        if allowed.is_empty() {
                            "no workspace crate".to_owned()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                ));
            }
            for (crate_, forbidden, why) in FORBIDDEN_EXTERNAL {
                let in_family = |family: &&str| {
                    dependency == *family
                        || dependency
                            .strip_prefix(family)
                            .is_some_and(|rest| rest.starts_with('-'))
                };
                if *crate_ == name && forbidden.iter().any(in_family) {
                    violations.push(violation(
                        dependency,
                        format!("{name} depends on {dependency}: {why}"),
                    ));
                }
            }
        }
    }
    Ok(violations)
}

/// The line of a manifest that declares `dependency` (`name = ...`, `name.workspace = true` or
/// `[dependencies.name]`), if one does.
fn manifest_line(text: &str, dependency: &str) -> Option<usize> {
    if dependency.is_empty() {
        return None;
    }
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(dependency)
                .is_some_and(|rest| rest.starts_with([' ', '=', '.']))
                || line.trim_end().ends_with(&format!(".{dependency}]"))
        })
        .map(|index| index + 1)
}

/// Checks 2 and 3: [`RULES`] over the production code, less [`ALLOWED`]; then the entries of
/// [`ALLOWED`] that matched nothing.
fn check_rules(root: &Path) -> anyhow::Result<Vec<Violation>> {
    let mut violations = Vec::new();
    let mut used = vec![false; ALLOWED.len()];
    for rule in RULES {
        for dir in rule.dirs {
            for path in rust_files(&root.join(dir))? {
                let file = relative(root, &path);
                if is_test_file(&file) {
                    continue;
                }
                let text = read(&path)?;
                for (line, pattern) in scan(&text, rule.patterns) {
                    let exception = ALLOWED.iter().position(|a| {
                        a.rule == rule.name && a.file == file && a.pattern == pattern
                    });
                    match exception {
                        Some(index) => used[index] = true,
                        None => violations.push(Violation {
                            file: file.clone(),
                            line: Some(line),
                            message: format!("[{}] `{pattern}`: {}", rule.name, rule.why),
                        }),
                    }
                }
            }
        }
    }
    for (allowed, used) in ALLOWED.iter().zip(used) {
        if !used {
            violations.push(Violation {
                file: allowed.file.to_owned(),
                line: None,
                message: format!(
                    "[{}] the exception for `{}` ({}) matches nothing any more: remove it \
                     from ALLOWED in xtask/src/tidy.rs",
                    allowed.rule, allowed.pattern, allowed.reason
                ),
            });
        }
    }
    Ok(violations)
}

/// Check 4: every `.rs` file of `crates/*/src`, `sim/src` and `xtask/src` starts with `//!`.
fn check_module_docs(root: &Path) -> anyhow::Result<Vec<Violation>> {
    let mut dirs = vec![root.join("sim/src"), root.join("xtask/src")];
    for entry in std::fs::read_dir(root.join("crates")).context("cannot list crates/")? {
        dirs.push(entry?.path().join("src"));
    }
    let mut violations = Vec::new();
    for dir in dirs {
        for path in rust_files(&dir)? {
            if !starts_with_module_doc(&read(&path)?) {
                violations.push(Violation {
                    file: relative(root, &path),
                    line: Some(1),
                    message: "no module doc comment: start the file with `//!` lines saying \
                              what it is for"
                        .to_owned(),
                });
            }
        }
    }
    Ok(violations)
}

/// Whether the first non-blank line of a source file is an inner doc comment.
fn starts_with_module_doc(text: &str) -> bool {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_start().starts_with("//!"))
}

/// The (line number, pattern) of each pattern found in the production code of `text`.
fn scan(text: &str, patterns: &[&'static str]) -> Vec<(usize, &'static str)> {
    code_lines(text)
        .into_iter()
        .flat_map(|(number, line)| {
            patterns
                .iter()
                .filter(move |pattern| line.contains(**pattern))
                .map(move |pattern| (number, *pattern))
        })
        .collect()
}

/// The production-code lines of a source file, numbered from 1. A line scan, not a parser:
///
/// - comment lines (`//`, `//!`, `///`) are skipped; block comments and trailing comments are
///   not (a pattern there is reported — reword the comment);
/// - the item after a `#[cfg(test)]` line is skipped: further attribute lines, then up to the
///   `;` that ends it (`mod tests;`) or the line where its braces balance again (`mod tests {
///   ... }`). Braces are counted on the raw line, string literals included, so a test module
///   must keep them balanced per line outside `//` comments — `"{}"` is fine, a lone `"{"` is
///   not (the skip would end late or early);
/// - a `#![cfg(test)]` line ends the file's production code.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    // Inside a `#[cfg(test)]` item: its brace depth, and whether its body has opened.
    let mut skipping: Option<(i64, bool)> = None;
    for (index, line) in text.lines().enumerate() {
        let mut code = line.trim();
        if code.starts_with("//") {
            continue;
        }
        if code.starts_with("#![cfg(test)]") {
            break;
        }
        if skipping.is_none() {
            match code.strip_prefix("#[cfg(test)]") {
                Some(rest) => {
                    skipping = Some((0, false));
                    code = rest.trim();
                }
                None => {
                    lines.push((index + 1, line));
                    continue;
                }
            }
        }
        let Some((depth, opened)) = skipping.as_mut() else {
            continue;
        };
        if code.is_empty() || (!*opened && code.starts_with("#[")) {
            continue;
        }
        for c in code.chars() {
            match c {
                '{' => {
                    *depth += 1;
                    *opened = true;
                }
                '}' => *depth -= 1,
                _ => {}
            }
        }
        if *depth <= 0 && (*opened || code.ends_with(';')) {
            skipping = None;
        }
    }
    lines
}

/// Whether a file is test code by its place: `tests.rs` (a `#[cfg(test)] mod tests;`) or
/// anything under a `tests` directory.
fn is_test_file(relative: &str) -> bool {
    relative
        .split('/')
        .any(|part| part == "tests" || part == "tests.rs")
}

/// The `.rs` files under `dir`, recursively, in path order; none if it does not exist.
fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if !dir.is_dir() {
        return Ok(files);
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `path` relative to the workspace root, with `/` separators.
fn relative(root: &Path, path: &Path) -> String {
    let path = path.strip_prefix(root).unwrap_or(path);
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORE: &[&str] = &[
        "SystemTime",
        "Instant::now",
        "thread::spawn",
        "std::fs",
        "File::",
    ];

    #[test]
    fn a_violation_in_code_is_caught_with_its_line() {
        let text = "//! A module.\n\nfn now() -> u64 {\n    let t = std::time::Instant::now();\n    0\n}\n";
        assert_eq!(scan(text, CORE), vec![(4, "Instant::now")]);
        let text = "//! A module.\nuse std::thread;\nfn f() { thread::spawn(|| ()); }\n";
        assert_eq!(scan(text, CORE), vec![(3, "thread::spawn")]);
    }

    #[test]
    fn comments_are_not_code() {
        let text = "//! Never calls `Instant::now`.\n/// Not `SystemTime` either.\n    // nor std::fs\nfn f() {}\n";
        assert_eq!(scan(text, CORE), vec![]);
    }

    #[test]
    fn a_cfg_test_module_is_skipped_and_code_after_it_is_not() {
        let text = "\
//! A module.
fn f() {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    fn g() {
        let f = std::fs::File::open(\"x\").unwrap();
        println!(\"{}\", 1);
    }
}

fn h() { let _ = std::time::SystemTime::now(); }
";
        assert_eq!(scan(text, CORE), vec![(13, "SystemTime")]);
        assert_eq!(scan(text, &[".unwrap()"]), vec![]);
    }

    #[test]
    fn a_cfg_test_declaration_skips_one_line() {
        let text = "\
//! A module.
#[cfg(test)]
mod tests;
#[cfg(test)] use std::fs::File;
fn f() { let _ = std::fs::read(\"x\"); }
";
        assert_eq!(scan(text, CORE), vec![(5, "std::fs")]);
    }

    #[test]
    fn a_multi_line_cfg_test_item_is_skipped_whole() {
        let text = "\
#[cfg(test)]
fn helper(
    path: &str,
) -> Vec<u8> {
    std::fs::read(path).unwrap()
}
fn f() { x.unwrap() }
";
        assert_eq!(scan(text, &[".unwrap()"]), vec![(7, ".unwrap()")]);
    }

    #[test]
    fn an_inner_cfg_test_ends_the_production_code() {
        let text = "//! Tests.\n#![cfg(test)]\nfn f() { std::fs::read(\"x\"); }\n";
        assert_eq!(scan(text, CORE), vec![]);
    }

    #[test]
    fn module_docs_come_first() {
        assert!(starts_with_module_doc("//! What this is.\nfn f() {}\n"));
        assert!(starts_with_module_doc("\n//! After a blank line.\n"));
        assert!(!starts_with_module_doc("/// An item's doc.\nfn f() {}\n"));
        assert!(!starts_with_module_doc("use std::fs;\n//! Too late.\n"));
        assert!(!starts_with_module_doc(""));
    }

    #[test]
    fn test_files_are_known_by_their_place() {
        assert!(is_test_file("crates/rill-core/src/state/tests.rs"));
        assert!(is_test_file("crates/rill-core/src/tests/helpers.rs"));
        assert!(!is_test_file("crates/rill-core/src/state/mod.rs"));
        assert!(!is_test_file("crates/rill-core/src/contests.rs"));
    }

    #[test]
    fn manifest_lines_name_the_dependency() {
        let manifest = "[package]\nname = \"x\"\n\n[dependencies]\ntokio-util = \"1\"\ntokio.workspace = true\n\n[dependencies.fjall]\nversion = \"3\"\n";
        assert_eq!(manifest_line(manifest, "tokio"), Some(6));
        assert_eq!(manifest_line(manifest, "fjall"), Some(8));
        assert_eq!(manifest_line(manifest, "actix"), None);
    }

    #[test]
    fn every_workspace_crate_has_one_row() {
        let names: BTreeSet<&str> = ALLOWED_EDGES.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), ALLOWED_EDGES.len());
        for (name, allowed) in ALLOWED_EDGES {
            assert!(!allowed.contains(name), "{name} may not depend on itself");
            for dependency in *allowed {
                assert!(names.contains(dependency), "{dependency} has no row");
            }
        }
    }

    #[test]
    fn every_exception_names_a_rule_and_a_pattern_of_it() {
        for allowed in ALLOWED {
            let rule = RULES.iter().find(|r| r.name == allowed.rule);
            assert!(rule.is_some_and(|r| r.patterns.contains(&allowed.pattern)));
            assert!(!allowed.reason.is_empty());
        }
    }
}
