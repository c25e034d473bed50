//! metrics: to be filled in (see topology/wire/_native.pyi).
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
