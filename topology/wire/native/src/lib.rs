//! `topology.wire._native`: OTLP requests decoded in one native pass into columns.
//!
//! Each submodule registers its functions; the Python side (`topology/wire/otlp.py` and the stages)
//! wraps the returned byte columns with `numpy.frombuffer`.
use pyo3::prelude::*;

mod metrics;
mod spans;

/// The version of the column layout; the Python side refuses a module built for another.
const LAYOUT: u32 = 1;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LAYOUT", LAYOUT)?;
    spans::register(m)?;
    metrics::register(m)?;
    Ok(())
}
