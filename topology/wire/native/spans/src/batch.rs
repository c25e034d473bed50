//! One decoded `ExportTraceServiceRequest` (`decode`), and its columns for Python.
use bytes::Bytes;
use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::proto::Request;

/// The first span with ids of the wrong length or an all-zero id: resource, scope and span index in
/// the request, the three id lengths, and whether it is an all-zero id (the lengths being right).
pub type Problem = (usize, usize, usize, usize, usize, usize, bool);

#[pyclass(frozen, module = "topology.wire._spans")]
pub struct Batch {
    pub raw: Py<PyBytes>,
    pub req: Request,
    pub n: usize,
    pub problem: Option<Problem>,
}

pub fn decode(raw: &Bound<'_, PyBytes>) -> PyResult<Batch> {
    let data = raw.as_bytes();
    let req = Request::decode(Bytes::copy_from_slice(data))
        .map_err(|e| PyValueError::new_err(format!("not a valid protobuf ExportTraceServiceRequest: {e}")))?;
    let mut n = 0;
    let mut problem = None;
    for (i, rs) in req.resource_spans.iter().enumerate() {
        for (j, ss) in rs.scope_spans.iter().enumerate() {
            for (k, sp) in ss.spans.iter().enumerate() {
                if std::str::from_utf8(&sp.name).is_err() {
                    return Err(PyValueError::new_err(format!(
                        "not a valid protobuf ExportTraceServiceRequest: invalid UTF-8 in the name of \
                         resource_spans[{i}].scope_spans[{j}].spans[{k}]"
                    )));
                }
                if problem.is_none() {
                    let (t, s, p) = (sp.trace_id.len(), sp.span_id.len(), sp.parent_span_id.len());
                    if t != 16 || s != 8 || (p != 0 && p != 8) {
                        problem = Some((i, j, k, t, s, p, false));
                    } else if sp.trace_id.iter().all(|&b| b == 0) || sp.span_id.iter().all(|&b| b == 0) {
                        problem = Some((i, j, k, t, s, p, true));
                    }
                }
            }
            n += ss.spans.len();
        }
    }
    Ok(Batch { raw: raw.clone().unbind(), req, n, problem })
}

fn fixed(out: &mut Vec<u8>, id: &[u8], width: usize) {
    let n = id.len().min(width);
    out.extend_from_slice(&id[..n]);
    out.resize(out.len() + width - n, 0);
}

#[pymethods]
impl Batch {
    /// Spans in the request.
    #[getter]
    fn spans(&self) -> usize {
        self.n
    }

    /// The request's bytes (a decoded request is the bytes it was decoded from).
    #[pyo3(name = "SerializeToString")]
    fn serialize(&self, py: Python<'_>) -> Py<PyBytes> {
        self.raw.clone_ref(py)
    }

    /// The first span with bad ids, or None (see `Problem`).
    #[getter]
    fn problem(&self) -> Option<Problem> {
        self.problem
    }

    /// Each ResourceSpans' serialized resource, in order.
    fn resources<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.req.resource_spans.iter().map(|rs| PyBytes::new(py, &rs.resource)))
    }

    /// Columns, one row per span in request order, each little-endian bytes: trace_id (16 B),
    /// span_id (8 B), parent_span_id (8 B, zeros: none; ids of other lengths cut or zero-padded),
    /// start and end (u64 ns), kind and status (i32), resource and scope (u32: ResourceSpans index,
    /// ScopeSpans index within it).
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let n = self.n;
        let (mut tid, mut sid, mut pid) = (Vec::with_capacity(16 * n), Vec::with_capacity(8 * n),
                                           Vec::with_capacity(8 * n));
        let (mut start, mut end) = (Vec::with_capacity(8 * n), Vec::with_capacity(8 * n));
        let (mut kind, mut status) = (Vec::with_capacity(4 * n), Vec::with_capacity(4 * n));
        let (mut res, mut scope) = (Vec::with_capacity(4 * n), Vec::with_capacity(4 * n));
        for (i, rs) in self.req.resource_spans.iter().enumerate() {
            for (j, ss) in rs.scope_spans.iter().enumerate() {
                for sp in &ss.spans {
                    fixed(&mut tid, &sp.trace_id, 16);
                    fixed(&mut sid, &sp.span_id, 8);
                    fixed(&mut pid, &sp.parent_span_id, 8);
                    start.extend_from_slice(&sp.start_time_unix_nano.to_le_bytes());
                    end.extend_from_slice(&sp.end_time_unix_nano.to_le_bytes());
                    kind.extend_from_slice(&sp.kind.to_le_bytes());
                    let code = sp.status.as_ref().map_or(0, |s| s.code);
                    status.extend_from_slice(&code.to_le_bytes());
                    res.extend_from_slice(&(i as u32).to_le_bytes());
                    scope.extend_from_slice(&(j as u32).to_le_bytes());
                }
            }
        }
        let d = PyDict::new(py);
        for (k, v) in [("trace_id", tid), ("span_id", sid), ("parent_span_id", pid), ("start", start),
                       ("end", end), ("kind", kind), ("status", status), ("resource", res), ("scope", scope)] {
            d.set_item(k, PyBytes::new(py, &v))?;
        }
        Ok(d)
    }

    /// The name of span ``i`` (request order).
    fn name(&self, i: usize) -> PyResult<String> {
        let mut k = i;
        for rs in &self.req.resource_spans {
            for ss in &rs.scope_spans {
                if k < ss.spans.len() {
                    return Ok(String::from_utf8_lossy(&ss.spans[k].name).into_owned());
                }
                k -= ss.spans.len();
            }
        }
        Err(PyValueError::new_err(format!("no span {i} in a request of {}", self.n)))
    }

    /// The whole request as plain values (for tests): per resource (resource bytes, per scope
    /// [(trace_id, span_id, parent_span_id, name, kind, start, end, attributes, status code)]).
    #[allow(clippy::type_complexity)]
    fn tree<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for rs in &self.req.resource_spans {
            let scopes = PyList::empty(py);
            for ss in &rs.scope_spans {
                let spans = PyList::empty(py);
                for sp in &ss.spans {
                    let attrs = PyList::new(py, sp.attributes.iter().map(|a| PyBytes::new(py, a)))?;
                    spans.append((PyBytes::new(py, &sp.trace_id), PyBytes::new(py, &sp.span_id),
                                  PyBytes::new(py, &sp.parent_span_id), String::from_utf8_lossy(&sp.name),
                                  sp.kind, sp.start_time_unix_nano, sp.end_time_unix_nano, attrs,
                                  sp.status.as_ref().map_or(0, |s| s.code)))?;
                }
                scopes.append(spans)?;
            }
            out.append((PyBytes::new(py, &rs.resource), scopes))?;
        }
        Ok(out)
    }
}
