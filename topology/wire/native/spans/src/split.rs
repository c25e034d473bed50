//! A request cut into one request per trace id (TRACE stage 1 on Kafka): every span is kept as the
//! bytes it came as, under its own resource and scope (their bytes too), in request order; what
//! `topology.wire.otlp.split_spans` makes with a trace-id key, without an object per span.
use bytes::Bytes;
use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::omap::IdMap;
use crate::proto::{RawRequest, RawResourceSpans, RawScopeSpans, SpanTraceId};

struct Part {
    tid: Bytes,
    req: RawRequest,
    resource: Option<usize>,      // the source ResourceSpans of the part's last one
    scope: Option<(usize, usize)>, // the source ScopeSpans of the part's last one
}

pub fn by_trace_id<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
    let bad = |e: prost::DecodeError| {
        PyValueError::new_err(format!("not a valid protobuf ExportTraceServiceRequest: {e}"))
    };
    let req = RawRequest::decode(Bytes::copy_from_slice(data)).map_err(bad)?;
    let mut index: IdMap<Bytes, usize> = IdMap::default();
    let mut parts: Vec<Part> = Vec::new();
    for (i, rs) in req.resource_spans.iter().enumerate() {
        for (j, ss) in rs.scope_spans.iter().enumerate() {
            for span in &ss.spans {
                let tid = SpanTraceId::decode(span.clone()).map_err(bad)?.trace_id;
                let k = match index.get(&tid) {
                    Some(&k) => k,
                    None => {
                        index.insert(tid.clone(), parts.len());
                        parts.push(Part { tid, req: RawRequest::default(), resource: None, scope: None });
                        parts.len() - 1
                    }
                };
                let part = &mut parts[k];
                if part.resource != Some(i) {
                    part.req.resource_spans.push(RawResourceSpans {
                        resource: rs.resource.clone(), scope_spans: Vec::new(), schema_url: rs.schema_url.clone(),
                    });
                    part.resource = Some(i);
                }
                let r = part.req.resource_spans.last_mut().unwrap();
                if part.scope != Some((i, j)) {
                    r.scope_spans.push(RawScopeSpans {
                        scope: ss.scope.clone(), spans: Vec::new(), schema_url: ss.schema_url.clone(),
                    });
                    part.scope = Some((i, j));
                }
                r.scope_spans.last_mut().unwrap().spans.push(span.clone());
            }
        }
    }
    let out = PyList::empty(py);
    for part in parts {
        out.append((PyBytes::new(py, &part.tid), PyBytes::new(py, &part.req.encode_to_vec())))?;
    }
    Ok(out)
}
