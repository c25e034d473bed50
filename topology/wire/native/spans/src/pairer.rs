//! Span pairing, natively: the semantics of `topology.stages.trace` (its module docstring), span by
//! span in request order, as the Python implementation (`topology.stages.trace_python`) does it; the
//! tests compare the two on generated and simulated traffic. Python sees a request (a decoded
//! `Batch`) in, and edge accumulators and trace summaries out at a flush: work per request and per
//! edge, none per span.
use std::collections::BTreeSet;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::batch::Batch;
use crate::omap::{IdMap, OMap};
use crate::proto;

pub type Name = Arc<str>;
type SpanKey = [u8; 24];
type TraceId = [u8; 16];

pub const NAME_MAX: usize = 253;
const STRING_CHARS: usize = 256;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const STATUS_ERROR: i32 = 2;
pub const PEER_RECORD: u8 = 255;

// shapes: (source kind, target kind, connection type), see topology.stages.trace
pub const PAIR: u8 = 0;
pub const PAIR_MESSAGING: u8 = 1;
pub const FROM_USER: u8 = 2;
pub const TO_DATABASE: u8 = 3;
pub const TO_MESSAGING: u8 = 4;
pub const TO_UNINSTRUMENTED: u8 = 5;
const TARGET_KIND: [&str; 6] = ["SERVICE", "SERVICE", "SERVICE", "DATABASE", "MESSAGING", "UNINSTRUMENTED"];

pub const COUNTERS: [&str; 14] = [
    "requests", "bad_requests", "spans", "paired", "expired", "dropped", "total", "roots", "unnamed",
    "internal", "invalid", "no_service", "traces", "traces_evicted",
];
const REQUESTS: usize = 0;
pub const BAD_REQUESTS: usize = 1;
const SPANS: usize = 2;
const PAIRED: usize = 3;
const EXPIRED: usize = 4;
const DROPPED: usize = 5;
const TOTAL: usize = 6;
const ROOTS: usize = 7;
const UNNAMED: usize = 8;
const INTERNAL: usize = 9;
const INVALID: usize = 10;
const NO_SERVICE: usize = 11;
const TRACES: usize = 12;
const TRACES_EVICTED: usize = 13;

const VIRTUAL_NAME_KEYS: [&[u8]; 7] = [
    b"service.peer.name", b"peer.service", b"db.namespace", b"db.name", b"server.address",
    b"db.system.name", b"db.system",
];

/// The virtual server a CLIENT/PRODUCER span names (computed when it starts to wait).
#[derive(Clone)]
pub enum Virt {
    None,
    Unnamed,
    Named(Name, u8),
}

#[derive(Clone)]
pub struct Pend {
    pub arrived: f64,
    pub service: Name,
    pub cluster: Option<Name>,
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    pub err: bool,
    pub tid: TraceId,
    pub virt: Virt,
}

pub struct Trace {
    pub start: u64,
    pub end: u64,
    pub spans: u64,
    pub error: bool,
    pub services: BTreeSet<Name>,
    pub root_service: Name,
    pub root_name: Name,
    pub last: f64,
    pub real_root: bool,
    pub queued: f64,
    pub packed: Vec<u8>,
    pub kept: u32,
    pub peers: u32,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObsKey {
    pub window: u64,
    pub source: Name,
    pub target: Name,
    pub s_cluster: Option<Name>,
    pub t_cluster: Option<Name>,
    pub shape: u8,
}

#[derive(Clone)]
pub struct Acc {
    pub requests: u64,
    pub errors: u64,
    pub hist: Vec<(i32, u64)>,
    pub zero: u64,
    pub lat_ns: i128,
    pub first: u64,
    pub last: u64,
    pub exemplars: Vec<TraceId>,
    /// what flushes with a close decided (see ``take_obs``): 0 not yet (the observation is new since
    /// the last flush), NEW_IN_WINDOW, KNOWN_BEFORE
    pub mark: u8,
}

/// An observation first seen in its window (neither there nor in the window before at an earlier
/// flush): handed out at once; its later calls wait for a refresh or the close.
pub const NEW_IN_WINDOW: u8 = 1;
/// An observation seen in the window before: its calls wait for the close.
pub const KNOWN_BEFORE: u8 = 2;

impl Acc {
    pub fn new() -> Self {
        Acc { requests: 0, errors: 0, hist: Vec::new(), zero: 0, lat_ns: 0, first: 1 << 62, last: 0,
              exemplars: Vec::new(), mark: 0 }
    }
    fn add_hist(&mut self, i: i32, n: u64) {
        match self.hist.iter_mut().find(|e| e.0 == i) {
            Some(e) => e.1 += n,
            None => self.hist.push((i, n)),
        }
    }
    fn merge(&mut self, other: &Acc, max_exemplars: usize) {
        self.requests += other.requests;
        self.errors += other.errors;
        for &(i, n) in &other.hist {
            self.add_hist(i, n);
        }
        self.zero += other.zero;
        self.lat_ns += other.lat_ns;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        for t in &other.exemplars {
            if self.exemplars.len() >= max_exemplars {
                break;
            }
            if !self.exemplars.contains(t) {
                self.exemplars.push(*t);
            }
        }
    }
}

/// `topology.sketch.bucket_of` at scale 5, bit for bit (the same libm log2).
pub fn bucket_of(seconds: f64) -> i32 {
    const MAX_SECONDS: f64 = (1u64 << 20) as f64;
    let v = if seconds < MAX_SECONDS { seconds } else { MAX_SECONDS };
    let bits = v.to_bits();
    if bits & ((1u64 << 52) - 1) == 0 {
        let e = ((bits >> 52) & 0x7ff) as i64 - 1022; // frexp's exponent
        return (((e - 1) << 5) - 1) as i32;
    }
    ((v.log2() * 32.0).ceil() as i64 - 1) as i32
}

pub fn truncate_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `topology.catalog.pack_span`, appended to `out`.
#[allow(clippy::too_many_arguments)]
pub fn pack_span(out: &mut Vec<u8>, sid: &[u8], pid: &[u8], start: u64, end: u64, kind: u8, err: bool,
                 first: &[u8], name: &str) {
    let name = truncate_chars(name, STRING_CHARS).as_bytes();
    let mut id = [0u8; 8];
    let n = sid.len().min(8);
    id[..n].copy_from_slice(&sid[..n]);
    out.extend_from_slice(&id);
    let mut p = [0u8; 8];
    let n = pid.len().min(8);
    p[..n].copy_from_slice(&pid[..n]);
    out.extend_from_slice(&p);
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&end.to_le_bytes());
    out.push(kind);
    out.push(err as u8);
    out.extend_from_slice(&(first.len() as u16).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(first);
    out.extend_from_slice(name);
}

type Ident = (Option<Name>, Option<Name>);

#[pyclass(module = "topology.wire._spans")]
pub struct Pairer {
    pub wait: f64,
    pub max_pending: usize,
    pub ws: u64,
    pub max_traces: usize,
    pub max_kept: u32,
    pub max_exemplars: usize,
    pub counters: [u64; 14],
    pub clients: OMap<SpanKey, Pend>,
    pub servers: OMap<SpanKey, Vec<Pend>>,
    pub n_servers: usize,
    pub producers: OMap<SpanKey, Pend>,
    pub obs: Vec<(ObsKey, Acc)>,
    pub obs_index: IdMap<ObsKey, usize>,
    pub traces: OMap<TraceId, Trace>,
    pub summaries: Vec<(TraceId, Trace)>,
    idents: IdMap<Vec<u8>, Ident>,
    pub user: Name,
    pub namer: Py<PyAny>,
}

impl Pairer {
    pub fn empty(wait: f64, max_pending: usize, ws: u64, max_traces: usize, max_kept: u32,
                 max_exemplars: usize, namer: Py<PyAny>) -> Self {
        Pairer {
            wait, max_pending, ws, max_traces, max_kept, max_exemplars, counters: [0; 14],
            clients: OMap::default(), servers: OMap::default(), n_servers: 0, producers: OMap::default(),
            obs: Vec::new(), obs_index: IdMap::default(), traces: OMap::default(), summaries: Vec::new(),
            idents: IdMap::default(), user: Arc::from("user"), namer,
        }
    }

    fn identity(&mut self, raw: &[u8]) -> Ident {
        if let Some(id) = self.idents.get(raw) {
            return id.clone();
        }
        let mut service: Option<Name> = None;
        let mut cluster: Option<Name> = None;
        if let Ok(res) = <proto::Resource as prost::Message>::decode(raw) {
            for kv in &res.attributes {
                let text = match &kv.value {
                    Some(proto::AnyValue { value: Some(proto::Value::StringValue(s)) }) if !s.is_empty() => {
                        Some(Arc::<str>::from(s.as_str()))
                    }
                    _ => None,
                };
                if kv.key == "service.name" {
                    service = text;
                } else if kv.key == "k8s.deployment.name" {
                    cluster = text;
                }
            }
        }
        if self.idents.len() >= 10_000 {
            self.idents.clear();
        }
        self.idents.insert(raw.to_vec(), (service.clone(), cluster.clone()));
        (service, cluster)
    }

    /// The virtual server named by a span's attributes (the rule of `_to_virtual`); anything but
    /// well-formed string, integer and boolean values is left to the Python rule (`namer`).
    fn virt_of(&self, py: Python<'_>, attrs: &[bytes::Bytes]) -> PyResult<Virt> {
        let mut keys: Vec<&[u8]> = Vec::with_capacity(attrs.len());
        let (mut db, mut msg) = (false, false);
        for raw in attrs {
            if !(raw.len() > 2 && raw[0] == 0x0A && raw[1] < 0x80) {
                return self.delegate(py, attrs);
            }
            let key = &raw[2..(2 + raw[1] as usize).min(raw.len())];
            db |= key.starts_with(b"db.");
            msg |= key.starts_with(b"messaging.");
            keys.push(key);
        }
        let shape = if db { TO_DATABASE } else if msg { TO_MESSAGING } else { TO_UNINSTRUMENTED };
        for want in VIRTUAL_NAME_KEYS {
            let Some(i) = keys.iter().rposition(|k| *k == want) else { continue };
            let Ok(kv) = <proto::KeyValue as prost::Message>::decode(&attrs[i][..]) else {
                return self.delegate(py, attrs);
            };
            if kv.key.as_bytes() != want {
                return self.delegate(py, attrs);
            }
            let name: String = match kv.value.and_then(|v| v.value) {
                None => continue,
                Some(proto::Value::StringValue(s)) => {
                    if s.is_empty() || s.chars().count() > NAME_MAX {
                        continue;
                    }
                    s
                }
                Some(proto::Value::IntValue(i)) => i.to_string(),
                Some(proto::Value::BoolValue(b)) => (if b { "True" } else { "False" }).to_string(),
                Some(_) => return self.delegate(py, attrs),
            };
            return Ok(Virt::Named(Arc::from(name), shape));
        }
        Ok(Virt::Unnamed)
    }

    fn delegate(&self, py: Python<'_>, attrs: &[bytes::Bytes]) -> PyResult<Virt> {
        let list = PyList::new(py, attrs.iter().map(|a| PyBytes::new(py, a)))?;
        let got = self.namer.call1(py, (list,))?;
        let got: Option<(String, u8)> = got.bind(py).extract()?;
        Ok(match got {
            None => Virt::Unnamed,
            Some((name, shape)) if (TO_DATABASE..=TO_UNINSTRUMENTED).contains(&shape) => {
                Virt::Named(Arc::from(name), shape)
            }
            Some((_, shape)) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!("not a virtual peer's shape: {shape}")))
            }
        })
    }

    fn window(&self, start: u64) -> u64 {
        start / (self.ws * 1_000_000_000) * self.ws
    }

    fn record(&mut self, key: ObsKey, start: u64, dur: i128, error: bool, tid: &TraceId) {
        let idx = match self.obs_index.get(&key) {
            Some(&i) => i,
            None => {
                self.obs.push((key.clone(), Acc::new()));
                self.obs_index.insert(key, self.obs.len() - 1);
                self.obs.len() - 1
            }
        };
        let max_ex = self.max_exemplars;
        let acc = &mut self.obs[idx].1;
        acc.requests += 1;
        if error {
            acc.errors += 1;
        }
        if dur > 1 {
            acc.add_hist(bucket_of(dur as f64 * 1e-9), 1);
            acc.lat_ns += dur;
        } else {
            acc.zero += 1;
            if dur > 0 {
                acc.lat_ns += dur;
            }
        }
        if start < acc.first {
            acc.first = start;
        }
        if start > acc.last {
            acc.last = start;
        }
        if acc.exemplars.len() < max_ex && !acc.exemplars.contains(tid) {
            acc.exemplars.push(*tid);
        }
    }

    fn pair(&mut self, cl: &Pend, srv: &Pend) {
        self.counters[PAIRED] += 1;
        let shape = if cl.kind == PRODUCER || srv.kind == CONSUMER { PAIR_MESSAGING } else { PAIR };
        let key = ObsKey { window: self.window(cl.start), source: cl.service.clone(), target: srv.service.clone(),
                           s_cluster: cl.cluster.clone(), t_cluster: srv.cluster.clone(), shape };
        self.record(key, cl.start, srv.end as i128 - srv.start as i128, cl.err || srv.err, &cl.tid);
    }

    fn from_user(&mut self, srv: &Pend) {
        let key = ObsKey { window: self.window(srv.start), source: self.user.clone(), target: srv.service.clone(),
                           s_cluster: srv.cluster.as_ref().map(|_| self.user.clone()),
                           t_cluster: srv.cluster.clone(), shape: FROM_USER };
        self.record(key, srv.start, srv.end as i128 - srv.start as i128, srv.err, &srv.tid);
    }

    fn to_virtual(&mut self, cl: &Pend, key: &SpanKey) {
        let (name, shape) = match &cl.virt {
            Virt::Named(n, s) => (n.clone(), *s),
            _ => {
                self.counters[UNNAMED] += 1;
                return;
            }
        };
        let okey = ObsKey { window: self.window(cl.start), source: cl.service.clone(), target: name.clone(),
                            s_cluster: cl.cluster.clone(), t_cluster: cl.cluster.as_ref().map(|_| name.clone()),
                            shape };
        self.record(okey, cl.start, cl.end as i128 - cl.start as i128, cl.err, &cl.tid);
        let max_kept = self.max_kept;
        if let Some(tr) = self.traces.get_mut(&cl.tid) {
            if tr.peers < max_kept {
                tr.peers += 1;
                pack_span(&mut tr.packed, &key[16..], b"", 0, 0, PEER_RECORD, false, name.as_bytes(),
                          TARGET_KIND[shape as usize]);
            }
        }
    }

    fn over(&self) -> bool {
        self.clients.len() + self.n_servers > self.max_pending
    }

    fn make_room(&mut self, now: f64) {
        self.expire(now);
        if self.over() {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let c_first = self.clients.front().map(|(_, p)| p.arrived);
        let s_first = self.servers.front().map(|(_, l)| l[0].arrived);
        let client = match (c_first, s_first) {
            (_, None) => true,
            (Some(c), Some(s)) => c <= s,
            (None, Some(_)) => false,
        };
        if client {
            self.clients.pop_front();
        } else {
            let (key, lst) = self.servers.front_mut().unwrap();
            lst.remove(0);
            if lst.is_empty() {
                self.servers.remove(&key);
            }
            self.n_servers -= 1;
        }
        self.counters[DROPPED] += 1;
    }

    fn bound_producers(&mut self) {
        while self.producers.len() > self.max_pending {
            self.producers.pop_front();
        }
    }

    pub fn expire(&mut self, now: f64) {
        let wait = self.wait;
        loop {
            match self.clients.front() {
                Some((_, cl)) if !(now - cl.arrived <= wait) => {}
                _ => break,
            }
            let (key, cl) = self.clients.pop_front().unwrap();
            self.counters[EXPIRED] += 1;
            self.to_virtual(&cl, &key);
        }
        loop {
            match self.servers.front() {
                Some((_, lst)) if !(now - lst[0].arrived <= wait) => {}
                _ => break,
            }
            let (key, lst) = self.servers.pop_front().unwrap();
            let mut late = Vec::new();
            for srv in lst {
                if now - srv.arrived > wait {
                    self.n_servers -= 1;
                    self.counters[EXPIRED] += 1;
                    if srv.kind == SERVER {
                        self.from_user(&srv);
                    }
                } else {
                    late.push(srv);
                }
            }
            if !late.is_empty() {
                self.servers.insert(key, late);
            }
        }
        loop {
            match self.producers.front() {
                Some((_, p)) if !(now - p.arrived <= wait) => {}
                _ => break,
            }
            self.producers.pop_front();
        }
    }

    fn evict_trace(&mut self) {
        if let Some(t) = self.traces.pop_front() {
            self.summaries.push(t);
            self.counters[TRACES_EVICTED] += 1;
        }
    }

    pub fn quiet_traces(&mut self, now: f64) {
        let wait = self.wait;
        loop {
            let Some((tid, tr)) = self.traces.front_mut() else { break };
            if now - tr.queued <= wait {
                break;
            }
            if now - tr.last > wait {
                let t = self.traces.remove(&tid).unwrap();
                self.summaries.push((tid, t));
            } else {
                tr.queued = tr.last;
                let t = self.traces.remove(&tid).unwrap();
                self.traces.insert(tid, t);
            }
        }
    }

    pub fn add_batch(&mut self, py: Python<'_>, batch: &Batch, now: f64) -> PyResult<()> {
        self.counters[REQUESTS] += 1;
        let max_kept = self.max_kept;
        for rs in &batch.req.resource_spans {
            let (service, cluster) = self.identity(&rs.resource);
            let service_utf8: Vec<u8> = match &service {
                Some(s) => truncate_chars(s, NAME_MAX).as_bytes().to_vec(),
                None => Vec::new(),
            };
            for ss in &rs.scope_spans {
                self.counters[SPANS] += ss.spans.len() as u64;
                let Some(service) = &service else {
                    self.counters[NO_SERVICE] += ss.spans.len() as u64;
                    continue;
                };
                for span in &ss.spans {
                    let (t, s, p) = (&span.trace_id, &span.span_id, &span.parent_span_id);
                    if t.len() != 16 || s.len() != 8 || (!p.is_empty() && p.len() != 8) {
                        self.counters[INVALID] += 1;
                        continue;
                    }
                    let tid: TraceId = t[..].try_into().unwrap();
                    let start = span.start_time_unix_nano;
                    let end = span.end_time_unix_nano;
                    let err = span.status.as_ref().is_some_and(|st| st.code == STATUS_ERROR);
                    let kind = span.kind;
                    // names were checked to be UTF-8 when the batch was decoded
                    let name = std::str::from_utf8(&span.name).unwrap_or("");
                    // trace summary
                    match self.traces.get_mut(&tid) {
                        None => {
                            let mut packed = Vec::new();
                            if max_kept > 0 {
                                pack_span(&mut packed, s, p, start, end, kind as u8, err, &service_utf8, name);
                            }
                            let mut services = BTreeSet::new();
                            services.insert(service.clone());
                            self.traces.insert(tid, Trace {
                                start, end, spans: 1, error: err, services, root_service: service.clone(),
                                root_name: Arc::from(name), last: now, real_root: p.is_empty(), queued: now,
                                packed, kept: if max_kept > 0 { 1 } else { 0 }, peers: 0,
                            });
                            self.counters[TRACES] += 1;
                            if self.traces.len() > self.max_traces {
                                self.evict_trace();
                            }
                        }
                        Some(tr) => {
                            if tr.kept < max_kept {
                                tr.kept += 1;
                                pack_span(&mut tr.packed, s, p, start, end, kind as u8, err, &service_utf8, name);
                            }
                            if start < tr.start {
                                tr.start = start;
                                if !tr.real_root {
                                    tr.root_service = service.clone();
                                    tr.root_name = Arc::from(name);
                                }
                            }
                            if end > tr.end {
                                tr.end = end;
                            }
                            tr.spans += 1;
                            if err {
                                tr.error = true;
                            }
                            if !tr.services.contains(service) {
                                tr.services.insert(service.clone());
                            }
                            tr.last = now;
                            if p.is_empty() && !tr.real_root {
                                tr.root_service = service.clone();
                                tr.root_name = Arc::from(name);
                                tr.real_root = true;
                            }
                        }
                    }
                    // pairing
                    let mut me = Pend { arrived: now, service: service.clone(), cluster: cluster.clone(), kind,
                                        start, end, err, tid, virt: Virt::None };
                    if kind == CLIENT || kind == PRODUCER {
                        let mut key = [0u8; 24];
                        key[..16].copy_from_slice(&tid);
                        key[16..].copy_from_slice(s);
                        match self.servers.remove(&key) {
                            None => {
                                me.virt = self.virt_of(py, &span.attributes)?;
                                self.clients.insert(key, me);
                                if self.over() {
                                    self.make_room(now);
                                }
                            }
                            Some(waiting) => {
                                self.n_servers -= waiting.len();
                                for srv in &waiting {
                                    self.pair(&me, srv);
                                }
                                if kind == PRODUCER {
                                    self.producers.insert(key, me);
                                    self.bound_producers();
                                }
                            }
                        }
                    } else if kind == SERVER || kind == CONSUMER {
                        if p.is_empty() {
                            if kind == SERVER {
                                self.counters[ROOTS] += 1;
                                self.from_user(&me);
                            }
                            continue;
                        }
                        let mut key = [0u8; 24];
                        key[..16].copy_from_slice(&tid);
                        key[16..].copy_from_slice(p);
                        let cl = match self.clients.remove(&key) {
                            Some(c) => Some(c),
                            None => self.producers.get(&key).cloned(),
                        };
                        match cl {
                            None => {
                                match self.servers.get_mut(&key) {
                                    Some(lst) => lst.push(me),
                                    None => self.servers.insert(key, vec![me]),
                                }
                                self.n_servers += 1;
                                if self.over() {
                                    self.make_room(now);
                                }
                            }
                            Some(cl) => {
                                self.pair(&cl, &me);
                                if cl.kind == PRODUCER && !self.producers.contains(&key) {
                                    self.producers.insert(key, cl);
                                    self.bound_producers();
                                }
                            }
                        }
                    } else {
                        self.counters[INTERNAL] += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The observations a flush hands out: all of them without ``close``; with it (stage 3's
    /// watermark), those of closed windows, those new in their window (not seen in it or the window
    /// before by an earlier flush) and, with ``refresh``, those not seen in the window before; the
    /// others stay, gathering (see "Holding" in topology/stages/trace.py). An observation seen by a
    /// flush with a close stays in ``obs`` (marked, its calls handed out or held) until the window after
    /// its own closes: the marks are what "seen" means, so a flush hashes only what is new since the
    /// last one.
    fn take_obs(&mut self, close: Option<f64>, refresh: bool) -> Vec<(ObsKey, Acc)> {
        let Some(close) = close else {
            // everything goes; only what a flush with a close saw stays, as a mark
            if self.obs.iter().all(|(_, a)| a.mark == 0) {
                self.obs_index.clear();
                return std::mem::take(&mut self.obs);
            }
            let mut out = Vec::new();
            for (k, acc) in self.obs.iter_mut() {
                if acc.requests > 0 {
                    let mark = acc.mark;
                    out.push((k.clone(), std::mem::replace(acc, Acc { mark, ..Acc::new() })));
                }
            }
            self.obs.retain(|(_, a)| a.mark != 0);
            self.reindex();
            return out;
        };
        let ws = self.ws;
        // "seen in the window before" as it stood before this flush (marks set by earlier flushes)
        let seen_before = |p: &Pairer, k: &ObsKey| {
            let before = ObsKey { window: k.window.wrapping_sub(ws), ..k.clone() };
            p.obs_index.get(&before).is_some_and(|&j| p.obs[j].1.mark != 0)
        };
        let mut decisions: Vec<(usize, bool, u8)> = Vec::new(); // (index, take, mark to set)
        for (i, (k, acc)) in self.obs.iter().enumerate() {
            let closed = (k.window + ws) as f64 <= close;
            match acc.mark {
                0 => {
                    let known = seen_before(self, k);
                    decisions.push((i, closed || !known, if known { KNOWN_BEFORE } else { NEW_IN_WINDOW }));
                }
                _ if acc.requests == 0 => {}
                _ if closed => decisions.push((i, true, acc.mark)),
                NEW_IN_WINDOW if refresh && !seen_before(self, k) => decisions.push((i, true, acc.mark)),
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(decisions.len());
        for (i, take, mark) in decisions {
            let (k, acc) = &mut self.obs[i];
            if take && acc.requests > 0 {
                out.push((k.clone(), std::mem::replace(acc, Acc { mark, ..Acc::new() })));
            } else {
                acc.mark = mark;
            }
        }
        if self.obs.iter().any(|(k, _)| (k.window + 2 * ws) as f64 <= close) {
            self.obs.retain(|(k, _)| (k.window + 2 * ws) as f64 > close);
            self.reindex();
        }
        out
    }

    fn reindex(&mut self) {
        self.obs_index.clear();
        for (i, (k, _)) in self.obs.iter().enumerate() {
            self.obs_index.insert(k.clone(), i);
        }
    }

    /// The edges of the observations a flush hands out (:meth:`take_obs`), merged per (window,
    /// granularity, source, target) and sorted, as Python tuples.
    pub fn edges<'py>(&mut self, py: Python<'py>, close: Option<f64>, refresh: bool)
                      -> PyResult<Bound<'py, PyList>> {
        type GroupKey = (u64, u8, Name, Name);
        let obs = self.take_obs(close, refresh);
        let mut index: IdMap<GroupKey, usize> = IdMap::default();
        let mut groups: Vec<(GroupKey, Vec<(usize, u8, Option<Name>, Option<Name>)>)> = Vec::new();
        for (i, (k, acc)) in obs.iter().enumerate() {
            self.counters[TOTAL] += acc.requests;
            let mut put = |gk: GroupKey, member: (usize, u8, Option<Name>, Option<Name>)| match index.get(&gk) {
                Some(&g) => groups[g].1.push(member),
                None => {
                    index.insert(gk.clone(), groups.len());
                    groups.push((gk, vec![member]));
                }
            };
            put((k.window, 0, k.source.clone(), k.target.clone()), (i, k.shape, None, None));
            if let (Some(sc), Some(tc)) = (&k.s_cluster, &k.t_cluster) {
                put((k.window, 1, sc.clone(), tc.clone()),
                    (i, k.shape, Some(k.source.clone()), Some(k.target.clone())));
            }
        }
        let mut edges: Vec<(GroupKey, Acc, u8, Option<Name>, Option<Name>)> = Vec::with_capacity(groups.len());
        for (gk, members) in groups {
            let (first, shape0, sa0, ta0) = members[0].clone();
            if members.len() == 1 {
                edges.push((gk, obs[first].1.clone(), shape0, sa0, ta0));
                continue;
            }
            let mut merged = Acc::new();
            let (mut shape, mut sa, mut ta) = (shape0, sa0, ta0);
            for (i, sh, a, b) in members {
                merged.merge(&obs[i].1, self.max_exemplars);
                if sh != PAIR && shape == PAIR {
                    shape = sh;
                    sa = a;
                    ta = b;
                }
            }
            edges.push((gk, merged, shape, sa, ta));
        }
        edges.sort_by(|a, b| (a.0 .0, a.0 .1, &a.0 .2, &a.0 .3).cmp(&(b.0 .0, b.0 .1, &b.0 .2, &b.0 .3)));
        let out = PyList::empty(py);
        for ((window, gran, source, target), acc, shape, sa, ta) in edges {
            // the sketch's dense counts from the lowest bucket (no zero at either end)
            let (lo, dense) = match (acc.hist.iter().map(|h| h.0).min(), acc.hist.iter().map(|h| h.0).max()) {
                (Some(lo), Some(hi)) => {
                    let mut dense = vec![0u64; (hi - lo + 1) as usize];
                    for &(i, n) in &acc.hist {
                        dense[(i - lo) as usize] += n;
                    }
                    (lo, dense)
                }
                _ => (0, Vec::new()),
            };
            let hist = (lo, PyTuple::new(py, dense)?);
            let mut ex: Vec<String> = acc.exemplars.iter().map(hex).collect();
            ex.sort();
            let key = (window, gran, &*source, &*target, shape, sa.as_deref(), ta.as_deref());
            let stats = (acc.requests, acc.errors, acc.zero, acc.lat_ns as f64 / 1e9, acc.first as f64 / 1e9,
                         acc.last as f64 / 1e9, ex, hist);
            out.append((key, stats))?;
        }
        Ok(out)
    }

    pub fn summaries_out<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (tid, tr) in std::mem::take(&mut self.summaries) {
            let services = PyTuple::new(py, tr.services.iter().map(|s| &**s))?;
            let duration = if tr.end > tr.start { (tr.end - tr.start) as f64 / 1e9 } else { 0.0 };
            out.append((hex(&tid), &*tr.root_service, &*tr.root_name, tr.start as f64 / 1e9, duration, tr.spans,
                        tr.error, services, PyBytes::new(py, &tr.packed)))?;
        }
        Ok(out)
    }

    pub fn oldest(&mut self) -> Option<f64> {
        let c = self.clients.front().map(|(_, p)| p.arrived);
        let s = self.servers.front().map(|(_, l)| l[0].arrived);
        match (c, s) {
            (Some(a), Some(b)) => Some(if b < a { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

pub fn hex(b: &TraceId) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}
