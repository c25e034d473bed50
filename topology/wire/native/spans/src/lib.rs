//! `topology.wire._spans`: OTLP trace requests decoded in one native pass (`decode` -> `Batch`: the
//! columns Python wraps with `numpy.frombuffer`), and span pairing over them (`Pairer`: the TRACE
//! stage's semantics, see topology/stages/trace.py). See ../../_spans.pyi.
use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod batch;
mod omap;
mod pairer;
mod proto;
mod split;
mod state;

use batch::Batch;
use pairer::Pairer;

/// The version of the column layout; the Python side refuses a module built for another.
const LAYOUT: u32 = 2;

/// Decode a serialized ExportTraceServiceRequest; ValueError (with the reason) if it is malformed.
#[pyfunction]
fn decode(data: &Bound<'_, PyBytes>) -> PyResult<Batch> {
    batch::decode(data)
}

/// A serialized request cut per trace id: [(trace id bytes, serialized request)] in first-appearance
/// order, each span as it came under its own resource and scope; ValueError if it does not parse.
#[pyfunction]
fn split_by_trace_id<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, pyo3::types::PyList>> {
    split::by_trace_id(py, data)
}

/// `topology.sketch.bucket_of(seconds)` at scale 5 (for tests: the pairer's own).
#[pyfunction]
fn bucket_of(seconds: f64) -> i32 {
    pairer::bucket_of(seconds)
}

#[pymethods]
impl Pairer {
    #[new]
    #[pyo3(signature = (wait_seconds, max_pending, window_seconds, max_traces, max_trace_spans, max_exemplars, namer))]
    fn py_new(wait_seconds: f64, max_pending: usize, window_seconds: u64, max_traces: usize, max_trace_spans: u32,
              max_exemplars: usize, namer: Py<PyAny>) -> PyResult<Self> {
        if max_pending == 0 || window_seconds == 0 || max_traces == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("max_pending, window_seconds, max_traces must be > 0"));
        }
        Ok(Pairer::empty(wait_seconds, max_pending, window_seconds, max_traces, max_trace_spans, max_exemplars,
                         namer))
    }

    /// Add the spans of one decoded request that arrived at ``now``.
    fn add(&mut self, py: Python<'_>, batch: PyRef<'_, Batch>, now: f64) -> PyResult<()> {
        self.add_batch(py, &batch, now)
    }

    fn count_bad_request(&mut self) {
        self.counters[pairer::BAD_REQUESTS] += 1;
    }

    /// Expire what waited past the wait, summarise quiet traces, and return the edges observed since
    /// the last flush: [((window, granularity 0 APP / 1 CLUSTER, source, target, shape, source app,
    /// target app), (requests, errors, zero, latency sum s, first s, last s, sorted hex exemplars,
    /// {bucket: count}))]. With ``close``, calls of open windows are held unless new in their window
    /// or ``refresh`` (see "Holding" in topology/stages/trace.py).
    #[pyo3(signature = (now, close=None, refresh=false))]
    fn flush<'py>(&mut self, py: Python<'py>, now: f64, close: Option<f64>, refresh: bool)
                  -> PyResult<Bound<'py, pyo3::types::PyList>> {
        self.expire(now);
        self.quiet_traces(now);
        self.edges(py, close, refresh)
    }

    /// Whether calls of windows ending at or before ``close`` wait here (a flush with it would hand
    /// them out: stage 3 closes those windows).
    fn holds_closing(&self, close: f64) -> bool {
        let ws = self.ws;
        self.obs.iter().any(|(k, a)| a.requests > 0 && (k.window + ws) as f64 <= close)
    }

    /// Trace summaries since the last call: [(trace id hex, root service, root name, start s,
    /// duration s, spans, error, services (a tuple), packed spans)]: TraceSummary's fields in order.
    fn take_summaries<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        self.summaries_out(py)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        pairer::COUNTERS.iter().copied().zip(self.counters.iter().copied()).collect()
    }

    #[getter]
    fn pending(&self) -> usize {
        self.clients.len() + self.n_servers
    }

    #[getter]
    fn oldest_arrival(&mut self) -> Option<f64> {
        self.oldest()
    }

    fn dump<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &state::dump(self))
    }

    #[staticmethod]
    fn load(data: &[u8], namer: Py<PyAny>) -> PyResult<Pairer> {
        state::load(data, namer)
    }
}

#[pymodule]
fn _spans(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LAYOUT", LAYOUT)?;
    m.add_class::<Batch>()?;
    m.add_class::<Pairer>()?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(bucket_of, m)?)?;
    m.add_function(wrap_pyfunction!(split_by_trace_id, m)?)?;
    Ok(())
}
