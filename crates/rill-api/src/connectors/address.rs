//! Server addresses as errors and operator names may show them: without a password. Every
//! connector crate names its server in messages; this is the one place that decides what of an
//! address is safe to print.

/// `url` (`scheme://user:password@host/…?password=…`) without its password: the user stays,
/// a `password` query parameter goes. Text that is no URL is returned as it is.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some(("", _password)) => host.to_owned(),
            Some((user, _password)) => format!("{user}@{host}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|parameter| !parameter.starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            without_password("redis://:secret@h:6379/0"),
            "redis://h:6379/0"
        );
        assert_eq!(
            without_password("nats://u:secret@h:4222"),
            "nats://u@h:4222"
        );
        assert_eq!(
            without_password("postgresql://u@h/db?password=secret&sslmode=disable"),
            "postgresql://u@h/db?sslmode=disable"
        );
        assert_eq!(without_password("nats://h:4222"), "nats://h:4222");
        assert_eq!(without_password("host=h"), "host=h");
    }
}
