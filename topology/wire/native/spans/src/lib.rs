//! `topology.wire._spans`: OTLP requests decoded in one native pass into columns (see ../../_spans.pyi).
//! The Python side wraps the returned byte columns with `numpy.frombuffer`.
use pyo3::prelude::*;

/// The version of the column layout; the Python side refuses a module built for another.
const LAYOUT: u32 = 1;

#[pymodule]
fn _spans(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LAYOUT", LAYOUT)?;
    Ok(())
}
