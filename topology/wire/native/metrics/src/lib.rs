//! `topology.wire._metrics`: an OTLP `ExportMetricsServiceRequest` decoded in one native pass into
//! columns (see ../../_metrics.pyi and topology/wire/metric_columns.py, which wraps them with numpy).
//!
//! The messages below are the *compact schema* of `topology.wire.otlp.metrics_view` (same field
//! numbers, only the fields the IPC stage reads): resources and attributes stay raw bytes (slices of one
//! copy of the input), histogram `bucket_counts` / `explicit_bounds` are the packed bytes (as in the
//! compact schema, a sender's unpacked encoding reads as empty). prost does all protobuf decoding.
//!
//! Output, per request: one fixed-size little-endian record per data point (`POINT` below, in request
//! order: resource, scope, metric, point), the bucket counts of every point flattened into one `u64`
//! column, and per-request tables the records index into: resources, metrics, series identities (resource,
//! metric name and attributes, interned within the request) and explicit-bounds byte strings.
use bytes::Bytes;
use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

mod stage;

/// The version of the column layout; the Python side refuses a module built for another.
const LAYOUT: u32 = 4;
/// Bytes per point record: metric u32, key u32, time u64, start u64, count u64, sum f64, value f64,
/// zero u64, bucket offset u32, bucket length u32, bounds (histograms) or positive offset (exponential)
/// i32, scale i32 (exponential).
const POINT: usize = 72;

#[derive(Clone, PartialEq, Message)]
struct Request {
    #[prost(message, repeated, tag = "1")]
    resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceMetrics {
    #[prost(bytes = "bytes", tag = "1")]
    resource: Bytes,
    #[prost(message, repeated, tag = "2")]
    scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeMetrics {
    #[prost(message, repeated, tag = "2")]
    metrics: Vec<Metric>,
}

/// Not a oneof in the compact schema: several data fields may be set; the stage reads the first of
/// histogram, sum, gauge, exponential histogram, summary.
#[derive(Clone, PartialEq, Message)]
struct Metric {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "3")]
    unit: String,
    #[prost(message, optional, tag = "5")]
    gauge: Option<Numbers>,
    #[prost(message, optional, tag = "7")]
    sum: Option<Numbers>,
    #[prost(message, optional, tag = "9")]
    histogram: Option<Histogram>,
    #[prost(message, optional, tag = "10")]
    exponential_histogram: Option<ExpHistogram>,
    #[prost(message, optional, tag = "11")]
    summary: Option<Summary>,
}

#[derive(Clone, PartialEq, Message)]
struct Numbers {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<NumberPoint>,
    #[prost(int32, tag = "2")]
    aggregation_temporality: i32,
}

#[derive(Clone, PartialEq, Message)]
struct NumberPoint {
    #[prost(bytes = "bytes", repeated, tag = "7")]
    attributes: Vec<Bytes>,
    #[prost(fixed64, tag = "2")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(double, tag = "4")]
    as_double: f64,
    #[prost(sfixed64, tag = "6")]
    as_int: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Histogram {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<HistogramPoint>,
    #[prost(int32, tag = "2")]
    aggregation_temporality: i32,
}

#[derive(Clone, PartialEq, Message)]
struct HistogramPoint {
    #[prost(bytes = "bytes", repeated, tag = "9")]
    attributes: Vec<Bytes>,
    #[prost(fixed64, tag = "2")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    count: u64,
    #[prost(double, tag = "5")]
    sum: f64,
    #[prost(bytes = "bytes", tag = "6")]
    bucket_counts: Bytes,
    #[prost(bytes = "bytes", tag = "7")]
    explicit_bounds: Bytes,
}

#[derive(Clone, PartialEq, Message)]
struct ExpHistogram {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<ExpPoint>,
    #[prost(int32, tag = "2")]
    aggregation_temporality: i32,
}

#[derive(Clone, PartialEq, Message)]
struct ExpPoint {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    attributes: Vec<Bytes>,
    #[prost(fixed64, tag = "2")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    count: u64,
    #[prost(double, tag = "5")]
    sum: f64,
    #[prost(sint32, tag = "6")]
    scale: i32,
    #[prost(fixed64, tag = "7")]
    zero_count: u64,
    #[prost(message, optional, tag = "8")]
    positive: Option<ExpBuckets>,
    #[prost(message, optional, tag = "9")]
    negative: Option<ExpBuckets>,
}

#[derive(Clone, PartialEq, Message)]
struct ExpBuckets {
    #[prost(sint32, tag = "1")]
    offset: i32,
    #[prost(uint64, repeated, tag = "2")]
    bucket_counts: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<SummaryPoint>,
}

#[derive(Clone, PartialEq, Message)]
struct SummaryPoint {
    #[prost(bytes = "bytes", repeated, tag = "7")]
    attributes: Vec<Bytes>,
    #[prost(fixed64, tag = "2")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    count: u64,
    #[prost(double, tag = "5")]
    sum: f64,
}

// Metric kinds (the `kind` of a metrics table row).
const NONE: u8 = 0;
const GAUGE: u8 = 1;
const SUM: u8 = 2;
const HISTOGRAM: u8 = 3;
const EXPONENTIAL: u8 = 4;
const SUMMARY: u8 = 5;

/// One point's record, before it is written out.
#[derive(Default)]
struct Point {
    time: u64,
    start: u64,
    count: u64,
    sum: f64,
    value: f64,
    zero: u64,
    bucket_off: u32,
    bucket_len: u32,
    bounds: i32,
    scale: i32,
}

/// The columns of one request, built in one pass.
struct Columns<'a> {
    points: Vec<u8>,
    buckets: Vec<u8>,
    key_bytes: Vec<u8>,
    key_ranges: Vec<(usize, usize)>,
    key_metric: Vec<u8>,
    key_index: HashMap<u64, u32, Fx>,
    bounds: Vec<&'a [u8]>,
    bounds_index: HashMap<&'a [u8], i32, Fx>,
}

impl<'a> Columns<'a> {
    /// The series index of (resource, name, attributes) within this request. The identity is written
    /// as length-prefixed parts (u32 little-endian lengths), so equal identities give equal bytes. Equal
    /// identities in one request share an index (a hash collision only costs a second entry: the Python
    /// side looks every key up by its bytes).
    fn key(&mut self, resource: &[u8], name: &str, attributes: &[Bytes], metric: u32) -> u32 {
        let buf = &mut self.key_bytes;
        let start = buf.len();
        for part in [resource, name.as_bytes()] {
            buf.extend_from_slice(&(part.len() as u32).to_le_bytes());
            buf.extend_from_slice(part);
        }
        for a in attributes {
            buf.extend_from_slice(&(a.len() as u32).to_le_bytes());
            buf.extend_from_slice(a);
        }
        let h = fx_hash(&buf[start..]);
        if let Some(&i) = self.key_index.get(&h) {
            let (a, b) = self.key_ranges[i as usize];
            if buf[a..b] == buf[start..] {
                buf.truncate(start);
                return i;
            }
        }
        let i = self.key_ranges.len() as u32;
        self.key_ranges.push((start, buf.len()));
        self.key_index.insert(h, i);
        self.key_metric.extend_from_slice(&metric.to_le_bytes());
        i
    }

    fn bounds_of(&mut self, bounds: &'a [u8]) -> i32 {
        if let Some(&i) = self.bounds_index.get(bounds) {
            return i;
        }
        let i = self.bounds.len() as i32;
        self.bounds.push(bounds);
        self.bounds_index.insert(bounds, i);
        i
    }

    /// Appends counts to the flat bucket column; returns (offset, length) in counts.
    fn extend_buckets(&mut self, counts: impl Iterator<Item = u64>) -> (u32, u32) {
        let off = (self.buckets.len() / 8) as u32;
        for c in counts {
            self.buckets.extend_from_slice(&c.to_le_bytes());
        }
        (off, (self.buckets.len() / 8) as u32 - off)
    }

    fn push(&mut self, metric: u32, key: u32, p: &Point) {
        let b = &mut self.points;
        b.extend_from_slice(&metric.to_le_bytes());
        b.extend_from_slice(&key.to_le_bytes());
        b.extend_from_slice(&p.time.to_le_bytes());
        b.extend_from_slice(&p.start.to_le_bytes());
        b.extend_from_slice(&p.count.to_le_bytes());
        b.extend_from_slice(&p.sum.to_le_bytes());
        b.extend_from_slice(&p.value.to_le_bytes());
        b.extend_from_slice(&p.zero.to_le_bytes());
        b.extend_from_slice(&p.bucket_off.to_le_bytes());
        b.extend_from_slice(&p.bucket_len.to_le_bytes());
        b.extend_from_slice(&p.bounds.to_le_bytes());
        b.extend_from_slice(&p.scale.to_le_bytes());
    }
}

/// A fast non-cryptographic hash (FxHash's step, 8 bytes at a time): keys are hashed within one request
/// only, where nobody can choose collisions to any effect (a collision costs a second key entry).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
        self.add(bytes.len() as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Fx = BuildHasherDefault<FxHasher>;

fn fx_hash(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.finish()
}

/// Packed little-endian u64s; trailing bytes that make no whole count are ignored (as the stage's
/// `struct.unpack_from` ignores them).
fn packed_u64(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()))
}

/// Decodes a serialized ExportMetricsServiceRequest into columns: a tuple (points, buckets, resources,
/// metrics, keys, key_metric, bounds); see topology/wire/_metrics.pyi. Raises ValueError if prost
/// cannot decode it.
#[pyfunction]
fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let req = Request::decode(Bytes::copy_from_slice(data))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut c = Columns {
        points: Vec::with_capacity(data.len() / 4 * POINT / 64 + POINT),
        buckets: Vec::new(),
        key_bytes: Vec::with_capacity(data.len() * 2),
        key_ranges: Vec::new(),
        key_metric: Vec::new(),
        key_index: HashMap::default(),
        bounds: Vec::new(),
        bounds_index: HashMap::default(),
    };
    let resources = PyList::empty(py);
    let metrics = PyList::empty(py);
    let mut metric = 0u32;
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        resources.append(PyBytes::new(py, &rm.resource))?;
        let res: &[u8] = &rm.resource;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let before = c.points.len();
                let (kind, temporality) = if let Some(h) = &m.histogram {
                    for dp in &h.data_points {
                        let key = c.key(res, &m.name, &dp.attributes, metric);
                        let (bucket_off, bucket_len) = c.extend_buckets(packed_u64(&dp.bucket_counts));
                        let p = Point {
                            time: dp.time_unix_nano,
                            start: dp.start_time_unix_nano,
                            count: dp.count,
                            sum: dp.sum,
                            bucket_off,
                            bucket_len,
                            bounds: c.bounds_of(&dp.explicit_bounds),
                            ..Point::default()
                        };
                        c.push(metric, key, &p);
                    }
                    (HISTOGRAM, h.aggregation_temporality)
                } else if let Some(n) = m.sum.as_ref().or(m.gauge.as_ref()) {
                    for dp in &n.data_points {
                        let key = c.key(res, &m.name, &dp.attributes, metric);
                        // `as_double or as_int`, as the stage reads a number point
                        let value = if dp.as_double != 0.0 { dp.as_double } else { dp.as_int as f64 };
                        let p = Point {
                            time: dp.time_unix_nano,
                            start: dp.start_time_unix_nano,
                            value,
                            ..Point::default()
                        };
                        c.push(metric, key, &p);
                    }
                    (if m.sum.is_some() { SUM } else { GAUGE }, n.aggregation_temporality)
                } else if let Some(e) = &m.exponential_histogram {
                    for dp in &e.data_points {
                        let key = c.key(res, &m.name, &dp.attributes, metric);
                        let (pos_off, pos) = match &dp.positive {
                            Some(b) => (b.offset, &b.bucket_counts[..]),
                            None => (0, &[][..]),
                        };
                        let (bucket_off, bucket_len) = c.extend_buckets(pos.iter().copied());
                        let negative: u64 = dp.negative.as_ref().map_or(0, |b| b.bucket_counts.iter().sum());
                        let p = Point {
                            time: dp.time_unix_nano,
                            start: dp.start_time_unix_nano,
                            count: dp.count,
                            sum: dp.sum,
                            zero: dp.zero_count.wrapping_add(negative),
                            bucket_off,
                            bucket_len,
                            bounds: pos_off,
                            scale: dp.scale,
                            ..Point::default()
                        };
                        c.push(metric, key, &p);
                    }
                    (EXPONENTIAL, e.aggregation_temporality)
                } else if let Some(s) = &m.summary {
                    for dp in &s.data_points {
                        let key = c.key(res, &m.name, &dp.attributes, metric);
                        let p = Point {
                            time: dp.time_unix_nano,
                            start: dp.start_time_unix_nano,
                            count: dp.count,
                            sum: dp.sum,
                            ..Point::default()
                        };
                        c.push(metric, key, &p);
                    }
                    (SUMMARY, 0)
                } else {
                    (NONE, 0)
                };
                let n = (c.points.len() - before) / POINT;
                let row = (m.name.as_str(), m.unit.as_str(), kind, temporality, ri, n);
                metrics.append(row.into_pyobject(py)?)?;
                metric += 1;
            }
        }
    }
    let keys = PyList::empty(py);
    for &(a, b) in &c.key_ranges {
        keys.append(PyBytes::new(py, &c.key_bytes[a..b]))?;
    }
    let bounds = PyList::empty(py);
    for b in &c.bounds {
        bounds.append(PyBytes::new(py, b))?;
    }
    let items: [Bound<'py, PyAny>; 7] = [
        PyBytes::new(py, &c.points).into_any(),
        PyBytes::new(py, &c.buckets).into_any(),
        resources.into_any(),
        metrics.into_any(),
        keys.into_any(),
        PyBytes::new(py, &c.key_metric).into_any(),
        bounds.into_any(),
    ];
    PyTuple::new(py, items)
}

#[pymodule]
fn _metrics(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LAYOUT", LAYOUT)?;
    m.add("POINT_BYTES", POINT)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_class::<stage::IpcCore>()?;
    Ok(())
}
