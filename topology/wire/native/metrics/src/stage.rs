//! `IpcCore`: the per-point work of the IPC stage 1 (`topology/stages/ipc.py` `IpcStage1`), done while a
//! request is decoded: series lookup, cumulative -> delta, explicit buckets -> sketch buckets, sums per
//! (window, group) accumulator, Spectator count/totalTime joins. Python is asked only about what it has
//! not seen (a resource's service, a new series' meaning, a bucket layout) through the handler passed to
//! `add`, and reads one tuple per finished accumulator at `flush`.
//!
//! The arithmetic is the point-by-point stage's (`topology/stages/ipc_points.py`, the oracle the tests
//! compare with), point by point in request order: float sums are made in the same order, counts are
//! integers (i128 here, unbounded ints there), a series' state changes exactly as there (a skipped
//! point keeps its sum, a reset takes the new cumulative values).
use super::{Bytes, Fx, FxHasher, Metric, Request};
use std::hash::Hasher;
use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::collections::{HashMap, VecDeque};

/// The sketch bucket key of zero-length calls (`topology.stages.ipc._ZERO`).
const ZERO: i64 = -(1 << 40);
const ZERO_THRESHOLD: f64 = 1e-9;
const MAX_SECONDS: f64 = (1u64 << 20) as f64;
const SCALE: u32 = 5;

// counters, in the order of `COUNTERS` (topology/stages/ipc.py reads them by name)
const REQUESTS: usize = 0;
const POINTS: usize = 1;
const SERIES: usize = 2;
const UNKNOWN_METRICS: usize = 3;
const NO_SERVICE: usize = 4;
const NO_PEER: usize = 5;
const BASELINES: usize = 6;
const RESETS: usize = 7;
const EVICTIONS: usize = 8;
const LATE_POINTS: usize = 9;
const IGNORED_POINTS: usize = 10;
const BAD_POINTS: usize = 11;
const COUNTERS: [&str; 12] = [
    "requests", "points", "series", "unknown_metrics", "no_service", "no_peer", "baselines", "resets",
    "evictions", "late_points", "ignored_points", "bad_points",
];

/// `topology.sketch.bucket_of` at SCALE for a value above ZERO_THRESHOLD, else ZERO (`ipc._bucket`).
fn bucket(seconds: f64) -> i64 {
    if !(seconds > ZERO_THRESHOLD) {
        return ZERO;
    }
    let v = if seconds < MAX_SECONDS { seconds } else { MAX_SECONDS };
    let bits = v.to_bits();
    if bits & ((1u64 << 52) - 1) == 0 {
        // an exact power of two 2**k (frexp: m = 0.5, e = k + 1) closes its bucket
        let k = ((bits >> 52) & 0x7ff) as i64 - 1023;
        return (k << SCALE) - 1;
    }
    (v.log2() * (1u64 << SCALE) as f64).ceil() as i64 - 1
}

/// A series' identity as key bytes: its parts (resource, metric name, attributes) each after its length
/// (u32 little-endian), as `topology.wire.metric_columns.key_parts` reads them.
fn build_key(buf: &mut Vec<u8>, res: &[u8], name: &str, attributes: &[Bytes]) {
    buf.clear();
    for part in [res, name.as_bytes()] {
        buf.extend_from_slice(&(part.len() as u32).to_le_bytes());
        buf.extend_from_slice(part);
    }
    for a in attributes {
        buf.extend_from_slice(&(a.len() as u32).to_le_bytes());
        buf.extend_from_slice(a);
    }
}

/// The parts of key bytes (`build_key`).
fn key_parts(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = key;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let part = &rest[4..(4 + n).min(rest.len())];
        rest = &rest[(4 + n).min(rest.len())..];
        Some(part)
    })
}

/// Whether key bytes are the identity (res, name, attributes), without building its key.
fn key_eq(key: &[u8], res: &[u8], name: &str, attributes: &[Bytes]) -> bool {
    let mut parts = key_parts(key);
    parts.next() == Some(res)
        && parts.next() == Some(name.as_bytes())
        && attributes.iter().all(|a| parts.next() == Some(&a[..]))
        && parts.next().is_none()
}

/// The hash of a series identity: each part hashed in turn (so the resource and name are hashed once per
/// metric), then mixed so that every bit depends on every part. A collision costs a lookup by bytes.
fn finish(h: FxHasher) -> u64 {
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

fn hash_of_key(key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    for part in key_parts(key) {
        h.write(part);
    }
    finish(h)
}

/// A Python bytes object as the buffer prost decodes from: the slices it hands out (resources, attributes,
/// buckets) point into the object, which stays alive as long as they do. Python bytes never change.
struct Held {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the buffer is immutable and kept alive by `_owner`; dropping a `Py` without the GIL is deferred
// by pyo3 (and the core drops every slice before `add` returns, with the GIL held).
unsafe impl Send for Held {}

impl Held {
    fn new(b: &Bound<'_, PyBytes>) -> Self {
        let data = b.as_bytes();
        Held { ptr: data.as_ptr(), len: data.len(), _owner: b.clone().unbind() }
    }
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the type's doc
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Python's `round(x)` (half to even) of a finite float, as an integer.
fn round_even(x: f64) -> i128 {
    x.round_ties_even() as i128
}

/// Explicit bounds -> per OTLP bucket its sketch bucket, and the bounds in seconds (from Python's
/// `ipc._rebucket`); no targets: unusable (the mean is used).
struct Layout {
    targets: Vec<i64>,
    edges: Vec<f64>,
}

#[derive(Default)]
struct Series {
    key: Box<[u8]>,
    group: i64,
    error: bool,
    stat: u8,
    base: i64,
    endpoint: i64,
    protocol: i64,
    seen: i64,
    /// whether the series has a baseline (`start` and the values below are set)
    has: bool,
    start: u64,
    count: u64,
    value: f64,
    total: f64,
    packed: Vec<u8>,
    bounds: Vec<u8>,
    layout: Option<u32>,
    exp_scale: i32,
    exp_zero: u64,
    exp: Vec<(i64, u64)>,
    // the accumulator this series last added to, valid in (acc_window, acc_epoch)
    acc: u32,
    acc_window: i64,
    acc_epoch: i64,
}

/// An exponential histogram's delta, kept at its own scale (Python builds its sketch at flush).
#[derive(Clone, PartialEq, Message)]
struct Fine {
    #[prost(sint32, tag = "1")]
    scale: i32,
    #[prost(sint64, repeated, tag = "2")]
    index: Vec<i64>,
    #[prost(uint64, repeated, tag = "3")]
    counts: Vec<u64>,
    #[prost(uint64, tag = "4")]
    zero: u64,
    #[prost(double, tag = "5")]
    unit: f64,
}

struct Acc {
    window: i64,
    gid: i64,
    requests: i128,
    errors: i128,
    lat: f64,
    first: f64,
    last: f64,
    protocol: i64,
    /// (sketch bucket or ZERO, calls), in the order added (a bucket may come several times)
    hist: Vec<(i64, i128)>,
    /// explicit-bucket counts summed per layout, re-bucketed at flush
    raw: Vec<(u32, Vec<i128>)>,
    endpoints: Vec<i64>,
    fine: Vec<Fine>,
}

impl Acc {
    fn new(window: i64, gid: i64) -> Self {
        Acc {
            window,
            gid,
            requests: 0,
            errors: 0,
            lat: 0.0,
            first: f64::INFINITY,
            last: 0.0,
            protocol: -1,
            hist: Vec::new(),
            raw: Vec::new(),
            endpoints: Vec::new(),
            fine: Vec::new(),
        }
    }

    fn touch(&mut self, t: f64) {
        if t < self.first {
            self.first = t;
        }
        if t > self.last {
            self.last = t;
        }
    }

    fn add_bucket(&mut self, b: i64, n: i128) {
        match self.hist.last_mut() {
            Some(last) if last.0 == b => last.1 += n,
            _ => self.hist.push((b, n)),
        }
    }

    /// Every (bucket, calls) added, the explicit buckets re-bucketed.
    fn buckets<'a>(&'a self, layouts: &'a [Layout]) -> impl Iterator<Item = (i64, i128)> + 'a {
        self.hist.iter().copied().chain(self.raw.iter().flat_map(move |(lay, counts)| {
            layouts[*lay as usize].targets.iter().copied().zip(counts.iter().copied())
        }))
    }
}

struct Join {
    window: i64,
    base: i64,
    count: f64,
    total: f64,
    acc: u32,
}

/// What a new series means, from Python: (group or -1, error, statistic code, base or -1, endpoint
/// text or -1, protocol text or -1).
type Meaning = (i64, bool, u8, i64, i64, i64);

#[pyclass(module = "topology.wire._metrics")]
pub struct IpcCore {
    ws: i64,
    max_series: usize,
    names: HashMap<String, f64>,
    units: HashMap<String, f64>,
    bottom: i64,
    top: i64,
    resources: HashMap<Box<[u8]>, bool, Fx>,
    layout_ids: HashMap<(u64, Box<[u8]>), u32, Fx>,
    layouts: Vec<Layout>,
    /// series numbers by the hash of their identity (`series_hash`), confirmed against the series' key;
    /// a key whose hash another key holds is found in `overflow`, by its bytes
    by_hash: HashMap<u64, u32, Fx>,
    overflow: HashMap<Box<[u8]>, u32, Fx>,
    /// per metric (hash of its resource, name and position) the series of its points, in order, the last time
    /// it came; `guess` is the current metric's, `guess_at` the position of its next point
    guesses: HashMap<u64, Vec<u32>, Fx>,
    guess: Vec<u32>,
    guess_at: usize,
    /// the bits of the hash kept (all; the tests keep 2, so that series collide)
    mask: u64,
    series: Vec<Series>,
    order: VecDeque<u32>,
    free: Vec<u32>,
    acc_ids: HashMap<(i64, i64), u32, Fx>,
    accs: Vec<Option<Acc>>,
    free_accs: Vec<u32>,
    joins: Vec<Join>,
    join_ids: HashMap<(i64, i64), u32, Fx>,
    counters: [i64; 12],
    watermark: f64,
    epoch: i64,
    key: Vec<u8>,
}

/// One metric's points as the core reads them.
struct Ctx<'a> {
    /// the hash of the series identity's first parts (resource, name)
    prefix: FxHasher,
    res: &'a [u8],
    name: &'a str,
    scale: f64,
    cumulative: bool,
}

impl IpcCore {
    fn series_of(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, attributes: &[Bytes]) -> PyResult<u32> {
        // the series this metric's point at this position had last time, if it is the same series
        let at = self.guess_at;
        self.guess_at += 1;
        if let Some(&sid) = self.guess.get(at) {
            let s = &mut self.series[sid as usize];
            if key_eq(&s.key, ctx.res, ctx.name, attributes) {
                s.seen = self.epoch;
                return Ok(sid);
            }
        }
        let sid = self.find(handler, ctx, attributes)?;
        if at < self.guess.len() {
            self.guess[at] = sid;
        } else {
            self.guess.push(sid);
        }
        Ok(sid)
    }

    fn find(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, attributes: &[Bytes]) -> PyResult<u32> {
        let mut h = ctx.prefix;
        for a in attributes {
            h.write(a);
        }
        let h = finish(h) & self.mask;
        let found = match self.by_hash.get(&h) {
            Some(&sid) if key_eq(&self.series[sid as usize].key, ctx.res, ctx.name, attributes) => Some(sid),
            _ if self.overflow.is_empty() => None,
            _ => {
                build_key(&mut self.key, ctx.res, ctx.name, attributes);
                self.overflow.get(&self.key[..]).copied()
            }
        };
        let sid = match found {
            Some(sid) => sid,
            None => {
                build_key(&mut self.key, ctx.res, ctx.name, attributes);
                self.new_series(handler, ctx, h)?
            }
        };
        self.series[sid as usize].seen = self.epoch;
        Ok(sid)
    }

    /// Number the series of `self.key` (hash `h`).
    fn remember(&mut self, sid: u32, key: Box<[u8]>, h: u64) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_hash.entry(h) {
            e.insert(sid);
        } else {
            self.overflow.insert(key, sid);
        }
    }

    fn forget(&mut self, sid: u32) {
        let key = &self.series[sid as usize].key;
        let h = hash_of_key(key) & self.mask;
        if self.by_hash.get(&h) == Some(&sid) {
            self.by_hash.remove(&h);
        } else {
            self.overflow.remove(key);
        }
    }

    fn new_series(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, h: u64) -> PyResult<u32> {
        self.counters[SERIES] += 1;
        let py = handler.py();
        let m: Meaning = handler
            .call_method1("_meaning_of", (PyBytes::new(py, &self.key), PyBytes::new(py, ctx.res), ctx.name))?
            .extract()?;
        if self.order.len() >= self.max_series {
            self.evict();
        }
        let key: Box<[u8]> = self.key.as_slice().into();
        let s = Series {
            key: key.clone(),
            group: m.0,
            error: m.1,
            stat: m.2,
            base: m.3,
            endpoint: m.4,
            protocol: m.5,
            acc_epoch: -1,
            ..Series::default()
        };
        let sid = match self.free.pop() {
            Some(i) => {
                self.series[i as usize] = s;
                i
            }
            None => {
                self.series.push(s);
                (self.series.len() - 1) as u32
            }
        };
        self.remember(sid, key, h);
        self.order.push_back(sid);
        Ok(sid)
    }

    /// The oldest series not seen since the last flush (or, failing that, the oldest) goes.
    fn evict(&mut self) {
        let mut gone = None;
        for _ in 0..8 {
            let sid = self.order.pop_front().expect("evicting from an empty cache");
            if self.series[sid as usize].seen != self.epoch {
                gone = Some(sid);
                break;
            }
            self.order.push_back(sid); // recently active: second chance
        }
        let sid = gone.unwrap_or_else(|| self.order.pop_front().expect("evicting from an empty cache"));
        self.forget(sid);
        self.series[sid as usize] = Series::default();
        self.free.push(sid);
        self.counters[EVICTIONS] += 1;
    }

    fn acc_of(&mut self, window: i64, gid: i64) -> u32 {
        if let Some(&i) = self.acc_ids.get(&(window, gid)) {
            return i;
        }
        if ((window + self.ws) as f64) <= self.watermark {
            self.counters[LATE_POINTS] += 1;
        }
        let acc = Acc::new(window, gid);
        let i = match self.free_accs.pop() {
            Some(i) => {
                self.accs[i as usize] = Some(acc);
                i
            }
            None => {
                self.accs.push(Some(acc));
                (self.accs.len() - 1) as u32
            }
        };
        self.acc_ids.insert((window, gid), i);
        i
    }

    /// The accumulator of a series' point that adds calls: the series' endpoint and (if none yet) its
    /// protocol go to it when the series first adds to it in this window and flush epoch.
    fn acc_for(&mut self, sid: u32, window: i64) -> u32 {
        let s = &self.series[sid as usize];
        if s.acc_window == window && s.acc_epoch == self.epoch {
            return s.acc;
        }
        let (gid, endpoint, protocol) = (s.group, s.endpoint, s.protocol);
        let i = self.acc_of(window, gid);
        let acc = self.accs[i as usize].as_mut().unwrap();
        if endpoint >= 0 && !acc.endpoints.contains(&endpoint) {
            acc.endpoints.push(endpoint);
        }
        if acc.protocol < 0 {
            acc.protocol = protocol;
        }
        let s = &mut self.series[sid as usize];
        s.acc = i;
        s.acc_window = window;
        s.acc_epoch = self.epoch;
        i
    }

    fn join_of(&mut self, window: i64, base: i64, acc: u32) -> u32 {
        if let Some(&j) = self.join_ids.get(&(window, base)) {
            return j;
        }
        self.joins.push(Join { window, base, count: 0.0, total: 0.0, acc });
        let j = (self.joins.len() - 1) as u32;
        self.join_ids.insert((window, base), j);
        j
    }

    fn window(&self, t_ns: u64) -> i64 {
        (t_ns / (self.ws as u64 * 1_000_000_000)) as i64 * self.ws
    }

    fn layout_of(&mut self, handler: &Bound<'_, PyAny>, bounds: &[u8], scale: f64) -> PyResult<u32> {
        let k = (scale.to_bits(), Box::<[u8]>::from(bounds));
        if let Some(&i) = self.layout_ids.get(&k) {
            return Ok(i);
        }
        let (targets, edges): (Vec<i64>, Vec<f64>) =
            handler.call_method1("_layout_of", (PyBytes::new(handler.py(), bounds), scale))?.extract()?;
        self.layouts.push(Layout { targets, edges });
        let i = (self.layouts.len() - 1) as u32;
        self.layout_ids.insert(k, i);
        Ok(i)
    }

    /// The common start of every point: its series (made if new), then None if it adds nothing (no peer,
    /// no time), else (series, time in ns).
    fn point(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, attributes: &[Bytes], t_ns: u64,
             ) -> PyResult<Option<u32>> {
        let sid = self.series_of(handler, ctx, attributes)?;
        if self.series[sid as usize].group < 0 {
            self.counters[NO_PEER] += 1;
            return Ok(None);
        }
        if t_ns == 0 {
            self.counters[BAD_POINTS] += 1;
            return Ok(None);
        }
        Ok(Some(sid))
    }

    fn histograms(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, h: &super::Histogram) -> PyResult<()> {
        let mut d: Vec<u64> = Vec::new();
        for dp in &h.data_points {
            let Some(sid) = self.point(handler, ctx, &dp.attributes, dp.time_unix_nano)? else { continue };
            let packed: &[u8] = &dp.bucket_counts;
            let s = &self.series[sid as usize];
            if s.layout.is_none() || s.bounds[..] != dp.explicit_bounds[..] {
                let lay = self.layout_of(handler, &dp.explicit_bounds, ctx.scale)?;
                let s = &mut self.series[sid as usize];
                s.bounds.clear();
                s.bounds.extend_from_slice(&dp.explicit_bounds);
                s.layout = Some(lay);
            }
            let count = dp.count;
            let (dcount, dsum);
            d.clear();
            d.extend(super::packed_u64(packed));
            let s = &mut self.series[sid as usize];
            if ctx.cumulative {
                let start = dp.start_time_unix_nano;
                if !s.has {
                    s.has = true;
                    (s.start, s.count, s.total) = (start, count, dp.sum);
                    s.packed.clear();
                    s.packed.extend_from_slice(packed);
                    self.counters[BASELINES] += 1;
                    continue;
                }
                if count == s.count && start == s.start && packed == &s.packed[..] {
                    continue; // nothing happened since the last point
                }
                let prev = &s.packed;
                let mut reset = start != s.start || count < s.count || prev.len() / 8 != d.len();
                if !reset {
                    for (x, p) in d.iter_mut().zip(super::packed_u64(prev)) {
                        if *x < p {
                            reset = true;
                            break;
                        }
                        *x -= p;
                    }
                }
                if reset {
                    self.counters[RESETS] += 1;
                    d.clear();
                    d.extend(super::packed_u64(packed));
                    (dcount, dsum) = (count, dp.sum);
                } else {
                    (dcount, dsum) = (count - s.count, dp.sum - s.total);
                }
                (s.start, s.count, s.total) = (start, count, dp.sum);
                s.packed.clear();
                s.packed.extend_from_slice(packed);
            } else {
                (dcount, dsum) = (count, dp.sum);
            }
            if dcount == 0 {
                continue;
            }
            let (error, lay) = (s.error, s.layout.unwrap());
            let window = self.window(dp.time_unix_nano);
            let ai = self.acc_for(sid, window);
            let acc = self.accs[ai as usize].as_mut().unwrap();
            acc.requests += dcount as i128;
            if error {
                acc.errors += dcount as i128;
            }
            acc.lat += dsum * ctx.scale;
            let layout = &self.layouts[lay as usize];
            let nonzero = d.iter().filter(|&&x| x != 0).count();
            if layout.targets.len() != d.len() || d.len() < 2 {
                acc.add_bucket(bucket(dsum * ctx.scale / dcount as f64), dcount as i128);
            } else if nonzero == 1 {
                // one bucket: the mean is exact, if it agrees with the bucket (else inconsistent data)
                let i = d.iter().position(|&x| x != 0).unwrap();
                let n = d[i];
                let mean = dsum * ctx.scale / n as f64;
                let edges = &layout.edges;
                let inside = (i == 0 || mean > edges[i - 1]) && (i == edges.len() || mean <= edges[i]);
                let b = if inside { bucket(mean) } else { layout.targets[i] };
                acc.add_bucket(b, n as i128);
            } else {
                match acc.raw.iter_mut().find(|r| r.0 == lay) {
                    Some((_, raw)) => {
                        for (r, &x) in raw.iter_mut().zip(d.iter()) {
                            *r += x as i128;
                        }
                    }
                    None => acc.raw.push((lay, d.iter().map(|&x| x as i128).collect())),
                }
            }
            acc.touch(dp.time_unix_nano as f64 / 1e9);
        }
        Ok(())
    }

    fn numbers(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, n: &super::Numbers) -> PyResult<()> {
        for dp in &n.data_points {
            let Some(sid) = self.point(handler, ctx, &dp.attributes, dp.time_unix_nano)? else { continue };
            let v = if dp.as_double != 0.0 { dp.as_double } else { dp.as_int as f64 };
            let s = &mut self.series[sid as usize];
            let d = if ctx.cumulative {
                let start = dp.start_time_unix_nano;
                if !s.has {
                    s.has = true;
                    (s.start, s.value) = (start, v);
                    self.counters[BASELINES] += 1;
                    continue;
                }
                let d = if start != s.start || v < s.value {
                    self.counters[RESETS] += 1;
                    v
                } else {
                    v - s.value
                };
                (s.start, s.value) = (start, v);
                d
            } else {
                v
            };
            let (stat, base, gid, error) = (s.stat, s.base, s.group, s.error);
            let window = self.window(dp.time_unix_nano);
            if stat <= 1 {
                let r = d.round_ties_even();
                if !(r.is_finite() && r > 0.0) {
                    continue;
                }
                let n = round_even(d);
                let ai = self.acc_for(sid, window);
                let acc = self.accs[ai as usize].as_mut().unwrap();
                acc.requests += n;
                if error {
                    acc.errors += n;
                }
                acc.touch(dp.time_unix_nano as f64 / 1e9);
                if base >= 0 {
                    let j = self.join_of(window, base, ai);
                    self.joins[j as usize].count += n as f64;
                }
            } else if stat == 2 && base >= 0 {
                if d > 0.0 {
                    let ai = self.acc_of(window, gid);
                    let j = self.join_of(window, base, ai);
                    self.joins[j as usize].total += d * ctx.scale;
                }
            } else {
                self.counters[IGNORED_POINTS] += 1; // max, percentiles: nothing to add
            }
        }
        Ok(())
    }

    /// Exponential histograms and summaries: (calls, seconds, fine sketch) added as the point stage's
    /// `_others` adds them.
    fn other(&mut self, sid: u32, t_ns: u64, n: u64, dsum: f64, fine: Option<Fine>) {
        if n == 0 {
            return;
        }
        let window = self.window(t_ns);
        let ai = self.acc_for(sid, window);
        let error = self.series[sid as usize].error;
        let acc = self.accs[ai as usize].as_mut().unwrap();
        acc.requests += n as i128;
        if error {
            acc.errors += n as i128;
        }
        acc.lat += dsum;
        match fine {
            None => acc.add_bucket(bucket(dsum / n as f64), n as i128),
            Some(f) => acc.fine.push(f),
        }
        acc.touch(t_ns as f64 / 1e9);
    }

    fn exponentials(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, e: &super::ExpHistogram) -> PyResult<()> {
        for dp in &e.data_points {
            let Some(sid) = self.point(handler, ctx, &dp.attributes, dp.time_unix_nano)? else { continue };
            let (off, pos) = match &dp.positive {
                Some(b) => (b.offset as i64, &b.bucket_counts[..]),
                None => (0, &[][..]),
            };
            let cur: Vec<(i64, u64)> =
                pos.iter().enumerate().filter(|(_, &x)| x != 0).map(|(i, &x)| (off + i as i64, x)).collect();
            let negative: u64 = dp.negative.as_ref().map_or(0, |b| b.bucket_counts.iter().sum());
            let zero = dp.zero_count.wrapping_add(negative);
            let fine = |scale: i32, counts: &[(i64, u64)], zero: u64| -> Option<Fine> {
                if !(-10..=20).contains(&scale) {
                    return None;
                }
                Some(Fine {
                    scale,
                    index: counts.iter().map(|c| c.0).collect(),
                    counts: counts.iter().map(|c| c.1).collect(),
                    zero,
                    unit: ctx.scale,
                })
            };
            let (count, total) = (dp.count, dp.sum);
            if !ctx.cumulative {
                let f = fine(dp.scale, &cur, zero);
                self.other(sid, dp.time_unix_nano, count, total * ctx.scale, f);
                continue;
            }
            let s = &mut self.series[sid as usize];
            let start = dp.start_time_unix_nano;
            if !s.has {
                s.has = true;
                (s.start, s.count, s.total) = (start, count, total);
                (s.exp_scale, s.exp_zero, s.exp) = (dp.scale, zero, cur);
                self.counters[BASELINES] += 1;
                continue;
            }
            let (dcount, dsum, f);
            if start != s.start || count < s.count {
                self.counters[RESETS] += 1;
                (dcount, dsum) = (count, total);
                f = fine(dp.scale, &cur, zero);
            } else {
                (dcount, dsum) = (count - s.count, total - s.total);
                f = exp_delta(dp.scale, &cur, zero, s).and_then(|(c, z)| fine(dp.scale, &c, z));
            }
            (s.start, s.count, s.total) = (start, count, total);
            (s.exp_scale, s.exp_zero, s.exp) = (dp.scale, zero, cur);
            self.other(sid, dp.time_unix_nano, dcount, dsum * ctx.scale, f);
        }
        Ok(())
    }

    fn summaries(&mut self, handler: &Bound<'_, PyAny>, ctx: &Ctx, m: &super::Summary) -> PyResult<()> {
        for dp in &m.data_points {
            let Some(sid) = self.point(handler, ctx, &dp.attributes, dp.time_unix_nano)? else { continue };
            let s = &mut self.series[sid as usize];
            let (count, total, start) = (dp.count, dp.sum, dp.start_time_unix_nano);
            if !s.has {
                s.has = true;
                (s.start, s.count, s.total) = (start, count, total);
                self.counters[BASELINES] += 1;
                continue;
            }
            let (dcount, dsum) = if start != s.start || count < s.count {
                self.counters[RESETS] += 1;
                (count, total)
            } else {
                (count - s.count, total - s.total)
            };
            (s.start, s.count, s.total) = (start, count, total);
            self.other(sid, dp.time_unix_nano, dcount, dsum * ctx.scale, None);
        }
        Ok(())
    }

    /// `ordinal`: the metric's position in its resource's metrics (a metric's name may come several times).
    fn metric(&mut self, handler: &Bound<'_, PyAny>, res: &[u8], has_service: bool, m: &Metric, ordinal: u64,
              ) -> PyResult<()> {
        let Some(&default) = self.names.get(&m.name) else {
            self.counters[UNKNOWN_METRICS] += 1;
            return Ok(());
        };
        let n = if let Some(h) = &m.histogram {
            h.data_points.len()
        } else if let Some(x) = m.sum.as_ref().or(m.gauge.as_ref()) {
            x.data_points.len()
        } else if let Some(e) = &m.exponential_histogram {
            e.data_points.len()
        } else if let Some(s) = &m.summary {
            s.data_points.len()
        } else {
            return Ok(()); // a metric without data
        };
        self.counters[POINTS] += n as i64;
        if !has_service {
            self.counters[NO_SERVICE] += n as i64;
            return Ok(());
        }
        let scale = self.units.get(&m.unit).copied().unwrap_or(default);
        let mut prefix = FxHasher::default();
        prefix.write(res);
        prefix.write(m.name.as_bytes());
        let mut ctx = Ctx { prefix, res, name: &m.name, scale, cumulative: false };
        let guess_key = finish(prefix) ^ ordinal.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.guess = self.guesses.remove(&guess_key).unwrap_or_default();
        self.guess_at = 0;
        let r = self.points(handler, &mut ctx, m);
        if self.guesses.len() >= 100_000 {
            self.guesses.clear();
        }
        self.guesses.insert(guess_key, std::mem::take(&mut self.guess));
        r
    }

    fn points(&mut self, handler: &Bound<'_, PyAny>, ctx: &mut Ctx, m: &Metric) -> PyResult<()> {
        const CUMULATIVE: i32 = 2;
        if let Some(h) = &m.histogram {
            ctx.cumulative = h.aggregation_temporality == CUMULATIVE;
            self.histograms(handler, ctx, h)
        } else if let Some(x) = &m.sum {
            ctx.cumulative = x.aggregation_temporality == CUMULATIVE;
            self.numbers(handler, ctx, x)
        } else if let Some(x) = &m.gauge {
            self.numbers(handler, ctx, x)
        } else if let Some(e) = &m.exponential_histogram {
            ctx.cumulative = e.aggregation_temporality == CUMULATIVE;
            self.exponentials(handler, ctx, e)
        } else {
            ctx.cumulative = true;
            self.summaries(handler, ctx, m.summary.as_ref().unwrap())
        }
    }

    /// (lowest bucket, dense counts, zero count) of an accumulator's buckets, as
    /// `LatencySketch.from_counts` makes them at SCALE (clamped to the range it keeps).
    /// Counts are never negative, so a bucket whose calls sum to 0 is one only added 0 (`from_counts`
    /// leaves it out).
    fn dense(&self, acc: &Acc) -> (i64, Vec<i128>, i128) {
        let (mut zero, mut lo, mut hi) = (0, i64::MAX, i64::MIN);
        for (b, n) in acc.buckets(&self.layouts) {
            if b == ZERO {
                zero += n;
            } else if n != 0 {
                let b = b.clamp(self.bottom, self.top);
                lo = lo.min(b);
                hi = hi.max(b);
            }
        }
        if lo > hi {
            return (0, Vec::new(), zero);
        }
        let mut dense = vec![0i128; (hi - lo + 1) as usize];
        for (b, n) in acc.buckets(&self.layouts) {
            if b != ZERO && n != 0 {
                dense[(b.clamp(self.bottom, self.top) - lo) as usize] += n;
            }
        }
        (lo, dense, zero)
    }
}

/// `ipc._exponential_delta`: the buckets and zero count of `cur - prev`, None if the scale changed or a
/// count went down.
fn exp_delta(scale: i32, cur: &[(i64, u64)], zero: u64, prev: &Series) -> Option<(Vec<(i64, u64)>, u64)> {
    if scale != prev.exp_scale || zero < prev.exp_zero {
        return None;
    }
    let now: HashMap<i64, u64> = cur.iter().copied().collect();
    if prev.exp.iter().any(|(i, n)| now.get(i).copied().unwrap_or(0) < *n) {
        return None;
    }
    let before: HashMap<i64, u64> = prev.exp.iter().copied().collect();
    let delta = cur
        .iter()
        .map(|&(i, n)| (i, n - before.get(&i).copied().unwrap_or(0)))
        .filter(|x| x.1 != 0)
        .collect();
    Some((delta, zero - prev.exp_zero))
}

// -- checkpoint state (prost messages) -------------------------------------------------------------
#[derive(Clone, PartialEq, Message)]
struct LayoutMsg {
    #[prost(sint64, repeated, tag = "1")]
    targets: Vec<i64>,
    #[prost(double, repeated, tag = "2")]
    edges: Vec<f64>,
    #[prost(bytes = "vec", tag = "3")]
    bounds: Vec<u8>,
    #[prost(double, tag = "4")]
    scale: f64,
}

#[derive(Clone, PartialEq, Message)]
struct SeriesMsg {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(sint64, repeated, tag = "2")]
    meaning: Vec<i64>, // group, error, stat, base, endpoint, protocol
    #[prost(int64, tag = "3")]
    seen: i64,
    #[prost(bool, tag = "4")]
    has: bool,
    #[prost(uint64, tag = "5")]
    start: u64,
    #[prost(uint64, tag = "6")]
    count: u64,
    #[prost(double, tag = "7")]
    value: f64,
    #[prost(double, tag = "8")]
    total: f64,
    #[prost(bytes = "vec", tag = "9")]
    packed: Vec<u8>,
    #[prost(bytes = "vec", tag = "10")]
    bounds: Vec<u8>,
    #[prost(sint64, tag = "11")]
    layout: i64, // -1: none
    #[prost(sint32, tag = "12")]
    exp_scale: i32,
    #[prost(uint64, tag = "13")]
    exp_zero: u64,
    #[prost(sint64, repeated, tag = "14")]
    exp_index: Vec<i64>,
    #[prost(uint64, repeated, tag = "15")]
    exp_counts: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct AccMsg {
    #[prost(sint64, tag = "1")]
    window: i64,
    #[prost(sint64, tag = "2")]
    gid: i64,
    /// requests, errors, then the bucket counts: i128 little-endian
    #[prost(bytes = "vec", tag = "3")]
    ints: Vec<u8>,
    #[prost(double, tag = "4")]
    lat: f64,
    #[prost(double, tag = "5")]
    first: f64,
    #[prost(double, tag = "6")]
    last: f64,
    #[prost(sint64, tag = "7")]
    protocol: i64,
    #[prost(sint64, repeated, tag = "8")]
    buckets: Vec<i64>,
    #[prost(sint64, repeated, tag = "9")]
    endpoints: Vec<i64>,
    #[prost(message, repeated, tag = "10")]
    fine: Vec<Fine>,
}

#[derive(Clone, PartialEq, Message)]
struct JoinMsg {
    #[prost(sint64, tag = "1")]
    window: i64,
    #[prost(sint64, tag = "2")]
    base: i64,
    #[prost(double, tag = "3")]
    count: f64,
    #[prost(double, tag = "4")]
    total: f64,
    #[prost(uint32, tag = "5")]
    acc: u32, // its position among `accs`
}

#[derive(Clone, PartialEq, Message)]
struct CoreMsg {
    #[prost(int64, tag = "1")]
    ws: i64,
    #[prost(uint64, tag = "2")]
    max_series: u64,
    #[prost(string, repeated, tag = "3")]
    names: Vec<String>,
    #[prost(double, repeated, tag = "4")]
    name_scales: Vec<f64>,
    #[prost(string, repeated, tag = "5")]
    units: Vec<String>,
    #[prost(double, repeated, tag = "6")]
    unit_scales: Vec<f64>,
    #[prost(sint64, tag = "7")]
    bottom: i64,
    #[prost(sint64, tag = "8")]
    top: i64,
    #[prost(message, repeated, tag = "9")]
    layouts: Vec<LayoutMsg>,
    #[prost(message, repeated, tag = "10")]
    series: Vec<SeriesMsg>, // in eviction order
    #[prost(message, repeated, tag = "11")]
    accs: Vec<AccMsg>,
    #[prost(message, repeated, tag = "12")]
    joins: Vec<JoinMsg>,
    #[prost(int64, repeated, tag = "13")]
    counters: Vec<i64>,
    #[prost(double, tag = "14")]
    watermark: f64,
    #[prost(int64, tag = "15")]
    epoch: i64,
}

/// A Python int (through i64 when it fits: i128's conversion is slower).
fn int(py: Python<'_>, v: i128) -> PyResult<Bound<'_, PyAny>> {
    Ok(match i64::try_from(v) {
        Ok(small) => small.into_pyobject(py)?.into_any(),
        Err(_) => v.into_pyobject(py)?.into_any(),
    })
}

fn ints(values: &[i128]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[pymethods]
impl IpcCore {
    /// names: accepted metric name -> default seconds per unit; units: unit -> seconds; bottom, top: the
    /// lowest and highest sketch bucket kept at SCALE.
    /// `collide` (tests): keep 2 bits of each series hash, so that lookups go through `overflow`.
    #[new]
    #[pyo3(signature = (window_seconds, max_series, names, units, bottom, top, collide=false))]
    fn new(window_seconds: i64, max_series: usize, names: HashMap<String, f64>, units: HashMap<String, f64>,
           bottom: i64, top: i64, collide: bool) -> PyResult<Self> {
        if window_seconds <= 0 || max_series == 0 {
            return Err(PyValueError::new_err("window_seconds and max_series must be positive"));
        }
        Ok(IpcCore {
            ws: window_seconds,
            max_series,
            names,
            units,
            bottom,
            top,
            resources: HashMap::default(),
            layout_ids: HashMap::default(),
            layouts: Vec::new(),
            by_hash: HashMap::default(),
            overflow: HashMap::default(),
            guesses: HashMap::default(),
            guess: Vec::new(),
            guess_at: 0,
            mask: if collide { 3 } else { u64::MAX },
            series: Vec::new(),
            order: VecDeque::new(),
            free: Vec::new(),
            acc_ids: HashMap::default(),
            accs: Vec::new(),
            free_accs: Vec::new(),
            joins: Vec::new(),
            join_ids: HashMap::default(),
            counters: [0; 12],
            watermark: f64::NEG_INFINITY,
            epoch: 0,
            key: Vec::new(),
        })
    }

    /// Add a serialized ExportMetricsServiceRequest (ValueError if prost refuses it; nothing is added
    /// then). `handler` answers `_service_known(resource) -> bool`, `_meaning_of(key, resource, name)`
    /// and `_layout_of(bounds, scale) -> (targets, edges)`.
    fn add(&mut self, data: &Bound<'_, PyAny>, handler: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = match data.cast::<PyBytes>() {
            Ok(b) => Bytes::from_owner(Held::new(b)), // the request read in place, not copied
            Err(_) => Bytes::from(data.extract::<Vec<u8>>()?), // a bytearray, a memoryview: copied
        };
        let req = Request::decode(buf).map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.counters[REQUESTS] += 1;
        for rm in &req.resource_metrics {
            let res: &[u8] = &rm.resource;
            let has_service = match self.resources.get(res) {
                Some(&b) => b,
                None => {
                    let b: bool = handler.call_method1("_service_known", (PyBytes::new(handler.py(), res),))?.extract()?;
                    if self.resources.len() >= 10_000 {
                        self.resources.clear();
                    }
                    self.resources.insert(res.into(), b);
                    b
                }
            };
            let mut ordinal = 0;
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    self.metric(handler, res, has_service, m, ordinal)?;
                    ordinal += 1;
                }
            }
        }
        Ok(())
    }

    /// Close every window that ended at or before `watermark`: per accumulator with calls a tuple
    /// (window, group, requests, errors, latency sum, first, last, protocol, lowest bucket, dense counts,
    /// zero count, their total, endpoints, exponential parts [(scale, indexes, counts, zero, unit)] or
    /// None), unsorted.
    fn flush<'py>(&mut self, py: Python<'py>, watermark: f64) -> PyResult<Bound<'py, PyList>> {
        let ws = self.ws;
        self.watermark = self.watermark.max(watermark);
        self.epoch += 1;
        let done = |w: i64| ((w + ws) as f64) <= watermark;
        if self.joins.iter().any(|j| done(j.window)) {
            let joins = std::mem::take(&mut self.joins);
            self.join_ids.clear();
            for j in joins {
                if !done(j.window) {
                    self.join_ids.insert((j.window, j.base), self.joins.len() as u32);
                    self.joins.push(j);
                    continue;
                }
                if j.count > 0.0 && j.total > 0.0 {
                    let acc = self.accs[j.acc as usize].as_mut().unwrap();
                    acc.add_bucket(bucket(j.total / j.count), round_even(j.count));
                    acc.lat += j.total;
                }
            }
        }
        let out = PyList::empty(py);
        let keys: Vec<(i64, i64)> = self.acc_ids.keys().filter(|k| done(k.0)).copied().collect();
        for k in keys {
            let i = self.acc_ids.remove(&k).unwrap();
            let acc = self.accs[i as usize].take().unwrap();
            self.free_accs.push(i);
            if acc.requests <= 0 {
                continue; // idle series: no calls, no edge
            }
            let (low, dense, zero) = self.dense(&acc);
            let total = zero + dense.iter().sum::<i128>();
            let fine = if acc.fine.is_empty() {
                py.None().into_bound(py)
            } else {
                let fine = PyList::empty(py);
                for f in &acc.fine {
                    fine.append((f.scale, f.index.clone(), f.counts.clone(), f.zero, f.unit))?;
                }
                fine.into_any()
            };
            let counts = if dense.iter().all(|&n| i64::try_from(n).is_ok()) {
                PyTuple::new(py, dense.iter().map(|&n| n as i64))? // the usual case: not i128's slower path
            } else {
                PyTuple::new(py, dense)?
            };
            let items: [Bound<'py, PyAny>; 14] = [
                acc.window.into_pyobject(py)?.into_any(),
                acc.gid.into_pyobject(py)?.into_any(),
                int(py, acc.requests)?,
                int(py, acc.errors)?,
                acc.lat.into_pyobject(py)?.into_any(),
                acc.first.into_pyobject(py)?.into_any(),
                acc.last.into_pyobject(py)?.into_any(),
                acc.protocol.into_pyobject(py)?.into_any(),
                low.into_pyobject(py)?.into_any(),
                counts.into_any(),
                int(py, zero)?,
                int(py, total)?,
                PyTuple::new(py, &acc.endpoints)?.into_any(),
                fine,
            ];
            out.append(PyTuple::new(py, items)?)?;
        }
        Ok(out)
    }

    fn counters(&self) -> HashMap<&'static str, i64> {
        COUNTERS.iter().copied().zip(self.counters.iter().copied()).collect()
    }

    fn __len__(&self) -> usize {
        self.order.len()
    }

    /// The whole state as bytes (caches of resources left out: the handler answers again).
    fn dump<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut layouts: Vec<LayoutMsg> = self
            .layouts
            .iter()
            .map(|l| LayoutMsg { targets: l.targets.clone(), edges: l.edges.clone(), ..Default::default() })
            .collect();
        for ((scale, bounds), &i) in &self.layout_ids {
            let l = &mut layouts[i as usize];
            l.bounds = bounds.to_vec();
            l.scale = f64::from_bits(*scale);
        }
        let series = self
            .order
            .iter()
            .map(|&sid| {
                let s = &self.series[sid as usize];
                SeriesMsg {
                    key: s.key.to_vec(),
                    meaning: vec![s.group, s.error as i64, s.stat as i64, s.base, s.endpoint, s.protocol],
                    seen: s.seen,
                    has: s.has,
                    start: s.start,
                    count: s.count,
                    value: s.value,
                    total: s.total,
                    packed: s.packed.clone(),
                    bounds: s.bounds.clone(),
                    layout: s.layout.map_or(-1, |l| l as i64),
                    exp_scale: s.exp_scale,
                    exp_zero: s.exp_zero,
                    exp_index: s.exp.iter().map(|x| x.0).collect(),
                    exp_counts: s.exp.iter().map(|x| x.1).collect(),
                }
            })
            .collect();
        let mut position = HashMap::new();
        let mut accs = Vec::new();
        for (i, slot) in self.accs.iter().enumerate() {
            let Some(acc) = slot.as_ref() else { continue };
            position.insert(i as u32, accs.len() as u32);
            let mut buckets: Vec<(i64, i128)> = Vec::new();
            let mut all: Vec<(i64, i128)> = acc.buckets(&self.layouts).collect();
            all.sort_unstable_by_key(|x| x.0);
            for (b, n) in all {
                match buckets.last_mut() {
                    Some(last) if last.0 == b => last.1 += n,
                    _ => buckets.push((b, n)),
                }
            }
            let mut values = vec![acc.requests, acc.errors];
            values.extend(buckets.iter().map(|x| x.1));
            accs.push(AccMsg {
                window: acc.window,
                gid: acc.gid,
                ints: ints(&values),
                lat: acc.lat,
                first: acc.first,
                last: acc.last,
                protocol: acc.protocol,
                buckets: buckets.iter().map(|x| x.0).collect(),
                endpoints: acc.endpoints.clone(),
                fine: acc.fine.clone(),
            });
        }
        let joins = self
            .joins
            .iter()
            .map(|j| JoinMsg { window: j.window, base: j.base, count: j.count, total: j.total, acc: position[&j.acc] })
            .collect();
        // sorted: equal states give equal bytes
        let mut names: Vec<(String, f64)> = self.names.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut units: Vec<(String, f64)> = self.units.iter().map(|(k, v)| (k.clone(), *v)).collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        units.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, name_scales) = names.into_iter().unzip();
        let (units, unit_scales) = units.into_iter().unzip();
        let msg = CoreMsg {
            ws: self.ws,
            max_series: self.max_series as u64,
            names,
            name_scales,
            units,
            unit_scales,
            bottom: self.bottom,
            top: self.top,
            layouts,
            series,
            accs,
            joins,
            counters: self.counters.to_vec(),
            watermark: self.watermark,
            epoch: self.epoch,
        };
        PyBytes::new(py, &msg.encode_to_vec())
    }

    /// A core from `dump` bytes (ValueError if malformed).
    #[staticmethod]
    fn load(data: &[u8]) -> PyResult<Self> {
        let bad = |why: &str| PyValueError::new_err(format!("IPC stage state: {why}"));
        let m = CoreMsg::decode(data).map_err(|e| bad(&e.to_string()))?;
        if m.names.len() != m.name_scales.len() || m.units.len() != m.unit_scales.len() || m.counters.len() != 12 {
            return Err(bad("tables of different lengths"));
        }
        let mut core = IpcCore::new(
            m.ws,
            m.max_series as usize,
            m.names.into_iter().zip(m.name_scales).collect(),
            m.units.into_iter().zip(m.unit_scales).collect(),
            m.bottom,
            m.top,
            false,
        )?;
        for l in m.layouts {
            core.layout_ids.insert((l.scale.to_bits(), l.bounds.into()), core.layouts.len() as u32);
            core.layouts.push(Layout { targets: l.targets, edges: l.edges });
        }
        let n_layouts = core.layouts.len() as i64;
        for s in m.series {
            if s.meaning.len() != 6 || s.layout >= n_layouts || s.exp_index.len() != s.exp_counts.len() {
                return Err(bad("a series out of range"));
            }
            let sid = core.series.len() as u32;
            let key: Box<[u8]> = s.key.into();
            core.remember(sid, key.clone(), hash_of_key(&key) & core.mask);
            core.order.push_back(sid);
            core.series.push(Series {
                key,
                group: s.meaning[0],
                error: s.meaning[1] != 0,
                stat: s.meaning[2] as u8,
                base: s.meaning[3],
                endpoint: s.meaning[4],
                protocol: s.meaning[5],
                seen: s.seen,
                has: s.has,
                start: s.start,
                count: s.count,
                value: s.value,
                total: s.total,
                packed: s.packed,
                bounds: s.bounds,
                layout: if s.layout < 0 { None } else { Some(s.layout as u32) },
                exp_scale: s.exp_scale,
                exp_zero: s.exp_zero,
                exp: s.exp_index.into_iter().zip(s.exp_counts).collect(),
                acc: 0,
                acc_window: 0,
                acc_epoch: -1,
            });
        }
        for a in m.accs {
            if a.ints.len() != 16 * (2 + a.buckets.len()) {
                return Err(bad("an accumulator's counts"));
            }
            let v: Vec<i128> = a.ints.chunks_exact(16).map(|c| i128::from_le_bytes(c.try_into().unwrap())).collect();
            let mut acc = Acc::new(a.window, a.gid);
            acc.requests = v[0];
            acc.errors = v[1];
            acc.hist = a.buckets.into_iter().zip(v[2..].iter().copied()).collect();
            (acc.lat, acc.first, acc.last, acc.protocol) = (a.lat, a.first, a.last, a.protocol);
            acc.endpoints = a.endpoints;
            acc.fine = a.fine;
            core.acc_ids.insert((a.window, a.gid), core.accs.len() as u32);
            core.accs.push(Some(acc));
        }
        for j in m.joins {
            if j.acc as usize >= core.accs.len() {
                return Err(bad("a join's accumulator"));
            }
            core.join_ids.insert((j.window, j.base), core.joins.len() as u32);
            core.joins.push(Join { window: j.window, base: j.base, count: j.count, total: j.total, acc: j.acc });
        }
        core.counters.copy_from_slice(&m.counters);
        core.watermark = m.watermark;
        core.epoch = m.epoch;
        Ok(core)
    }
}
