//! A component broken on purpose, planted in the keyed operators with timers an environment
//! builds, for the simulator to catch (see `rill_core::defects`). With the `defects` feature
//! off, [`Planted`] is empty and planting it does nothing: the helpers have no-op twins, so
//! that call sites carry no `cfg`.

use rill_core::keyed::{KeyedProcess, KeyedProcessFunction};
use rill_core::window::{WindowFunction, WindowOperator};

/// The defect, if any, every keyed operator with timers is built with.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Planted {
    #[cfg(feature = "defects")]
    defect: Option<rill_core::defects::Defect>,
}

#[cfg(feature = "defects")]
impl Planted {
    /// `defect`, to plant.
    pub(crate) fn with(defect: rill_core::defects::Defect) -> Self {
        Planted {
            defect: Some(defect),
        }
    }

    /// Breaks a window operator (or a window join) as the defect says.
    pub(crate) fn in_window<W: WindowFunction>(
        self,
        mut operator: WindowOperator<W>,
    ) -> WindowOperator<W> {
        if let Some(defect) = self.defect {
            operator.plant_defect(defect);
        }
        operator
    }

    /// Breaks a keyed process function's operator (or a co-process function's, or an interval
    /// join's) as the defect says.
    pub(crate) fn in_process<P: KeyedProcessFunction>(
        self,
        mut operator: KeyedProcess<P>,
    ) -> KeyedProcess<P> {
        if let Some(defect) = self.defect {
            operator.plant_defect(defect);
        }
        operator
    }
}

#[cfg(not(feature = "defects"))]
impl Planted {
    /// Without the feature, nothing is planted.
    pub(crate) fn in_window<W: WindowFunction>(
        self,
        operator: WindowOperator<W>,
    ) -> WindowOperator<W> {
        operator
    }

    /// Without the feature, nothing is planted.
    pub(crate) fn in_process<P: KeyedProcessFunction>(
        self,
        operator: KeyedProcess<P>,
    ) -> KeyedProcess<P> {
        operator
    }
}
