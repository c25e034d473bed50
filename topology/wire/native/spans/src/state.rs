//! A pairer's whole state as bytes (protobuf, declared here with prost) for checkpoints: every map in
//! its order, so a restored pairer continues exactly as the original would.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::pairer::{Acc, Name, ObsKey, Pairer, Pend, Trace, Virt};

#[derive(Clone, PartialEq, Message)]
struct StateMsg {
    #[prost(double, tag = "1")]
    wait: f64,
    #[prost(uint64, tag = "2")]
    max_pending: u64,
    #[prost(uint64, tag = "3")]
    ws: u64,
    #[prost(uint64, tag = "4")]
    max_traces: u64,
    #[prost(uint32, tag = "5")]
    max_kept: u32,
    #[prost(uint64, tag = "6")]
    max_exemplars: u64,
    #[prost(uint64, repeated, tag = "7")]
    counters: Vec<u64>,
    #[prost(message, repeated, tag = "8")]
    clients: Vec<PendMsg>,
    #[prost(message, repeated, tag = "9")]
    servers: Vec<PendMsg>, // consecutive entries of one key form its list
    #[prost(message, repeated, tag = "10")]
    producers: Vec<PendMsg>,
    #[prost(message, repeated, tag = "11")]
    obs: Vec<ObsMsg>,
    #[prost(message, repeated, tag = "12")]
    traces: Vec<TraceMsg>,
    #[prost(message, repeated, tag = "13")]
    summaries: Vec<TraceMsg>,
}

#[derive(Clone, PartialEq, Message)]
struct PendMsg {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(double, tag = "2")]
    arrived: f64,
    #[prost(string, tag = "3")]
    service: String,
    #[prost(string, optional, tag = "4")]
    cluster: Option<String>,
    #[prost(int32, tag = "5")]
    kind: i32,
    #[prost(uint64, tag = "6")]
    start: u64,
    #[prost(uint64, tag = "7")]
    end: u64,
    #[prost(bool, tag = "8")]
    err: bool,
    #[prost(bytes = "vec", tag = "9")]
    tid: Vec<u8>,
    #[prost(uint32, tag = "10")]
    virt: u32, // 0 none, 1 unnamed, 2 named
    #[prost(string, tag = "11")]
    virt_name: String,
    #[prost(uint32, tag = "12")]
    virt_shape: u32,
    #[prost(bool, tag = "13")]
    new_key: bool, // servers: the first span of its key's list
}

#[derive(Clone, PartialEq, Message)]
struct ObsMsg {
    #[prost(uint64, tag = "1")]
    window: u64,
    #[prost(string, tag = "2")]
    source: String,
    #[prost(string, tag = "3")]
    target: String,
    #[prost(string, optional, tag = "4")]
    s_cluster: Option<String>,
    #[prost(string, optional, tag = "5")]
    t_cluster: Option<String>,
    #[prost(uint32, tag = "6")]
    shape: u32,
    #[prost(uint64, tag = "7")]
    requests: u64,
    #[prost(uint64, tag = "8")]
    errors: u64,
    #[prost(sint32, repeated, tag = "9")]
    hist_index: Vec<i32>,
    #[prost(uint64, repeated, tag = "10")]
    hist_count: Vec<u64>,
    #[prost(uint64, tag = "11")]
    zero: u64,
    #[prost(bytes = "vec", tag = "12")]
    lat_ns: Vec<u8>, // i128, little-endian
    #[prost(uint64, tag = "13")]
    first: u64,
    #[prost(uint64, tag = "14")]
    last: u64,
    #[prost(bytes = "vec", repeated, tag = "15")]
    exemplars: Vec<Vec<u8>>,
    #[prost(uint32, tag = "16")]
    mark: u32, // Acc::mark (0 in dumps of builds before it)
}

#[derive(Clone, PartialEq, Message)]
struct TraceMsg {
    #[prost(bytes = "vec", tag = "1")]
    tid: Vec<u8>,
    #[prost(uint64, tag = "2")]
    start: u64,
    #[prost(uint64, tag = "3")]
    end: u64,
    #[prost(uint64, tag = "4")]
    spans: u64,
    #[prost(bool, tag = "5")]
    error: bool,
    #[prost(string, repeated, tag = "6")]
    services: Vec<String>,
    #[prost(string, tag = "7")]
    root_service: String,
    #[prost(string, tag = "8")]
    root_name: String,
    #[prost(double, tag = "9")]
    last: f64,
    #[prost(bool, tag = "10")]
    real_root: bool,
    #[prost(double, tag = "11")]
    queued: f64,
    #[prost(bytes = "vec", tag = "12")]
    packed: Vec<u8>,
    #[prost(uint32, tag = "13")]
    kept: u32,
    #[prost(uint32, tag = "14")]
    peers: u32,
}

fn pend_msg(key: &[u8], p: &Pend, new_key: bool) -> PendMsg {
    let (virt, virt_name, virt_shape) = match &p.virt {
        Virt::None => (0, String::new(), 0),
        Virt::Unnamed => (1, String::new(), 0),
        Virt::Named(n, s) => (2, n.to_string(), *s as u32),
    };
    PendMsg { key: key.to_vec(), arrived: p.arrived, service: p.service.to_string(),
              cluster: p.cluster.as_ref().map(|c| c.to_string()), kind: p.kind, start: p.start, end: p.end,
              err: p.err, tid: p.tid.to_vec(), virt, virt_name, virt_shape, new_key }
}

fn trace_msg(tid: &[u8], t: &Trace) -> TraceMsg {
    TraceMsg { tid: tid.to_vec(), start: t.start, end: t.end, spans: t.spans, error: t.error,
               services: t.services.iter().map(|s| s.to_string()).collect(),
               root_service: t.root_service.to_string(), root_name: t.root_name.to_string(), last: t.last,
               real_root: t.real_root, queued: t.queued, packed: t.packed.clone(), kept: t.kept, peers: t.peers }
}

pub fn dump(p: &Pairer) -> Vec<u8> {
    let mut servers = Vec::new();
    for (k, lst) in p.servers.iter() {
        for (i, s) in lst.iter().enumerate() {
            servers.push(pend_msg(k, s, i == 0));
        }
    }
    let obs = p.obs.iter().map(|(k, a)| ObsMsg {
        window: k.window, source: k.source.to_string(), target: k.target.to_string(),
        s_cluster: k.s_cluster.as_ref().map(|c| c.to_string()), t_cluster: k.t_cluster.as_ref().map(|c| c.to_string()),
        shape: k.shape as u32, requests: a.requests, errors: a.errors,
        hist_index: a.hist.iter().map(|h| h.0).collect(), hist_count: a.hist.iter().map(|h| h.1).collect(),
        zero: a.zero, lat_ns: a.lat_ns.to_le_bytes().to_vec(), first: a.first, last: a.last,
        exemplars: a.exemplars.iter().map(|t| t.to_vec()).collect(), mark: a.mark as u32,
    }).collect();
    StateMsg {
        wait: p.wait, max_pending: p.max_pending as u64, ws: p.ws, max_traces: p.max_traces as u64,
        max_kept: p.max_kept, max_exemplars: p.max_exemplars as u64, counters: p.counters.to_vec(),
        clients: p.clients.iter().map(|(k, v)| pend_msg(k, v, false)).collect(),
        servers,
        producers: p.producers.iter().map(|(k, v)| pend_msg(k, v, false)).collect(),
        obs,
        traces: p.traces.iter().map(|(k, t)| trace_msg(k, t)).collect(),
        summaries: p.summaries.iter().map(|(k, t)| trace_msg(k, t)).collect(),
    }
    .encode_to_vec()
}

fn bad(what: &str) -> PyErr {
    PyValueError::new_err(format!("malformed pairer state: {what}"))
}

struct Names(HashMap<String, Name>);

impl Names {
    fn get(&mut self, s: String) -> Name {
        self.0.entry(s).or_insert_with_key(|k| Arc::from(k.as_str())).clone()
    }
}

fn arr<const N: usize>(v: &[u8], what: &str) -> PyResult<[u8; N]> {
    v.try_into().map_err(|_| bad(what))
}

fn pend(m: PendMsg, names: &mut Names) -> PyResult<([u8; 24], Pend, bool)> {
    let virt = match m.virt {
        0 => Virt::None,
        1 => Virt::Unnamed,
        2 if m.virt_shape <= 5 => Virt::Named(names.get(m.virt_name), m.virt_shape as u8),
        _ => return Err(bad("virtual peer")),
    };
    let p = Pend { arrived: m.arrived, service: names.get(m.service), cluster: m.cluster.map(|c| names.get(c)),
                   kind: m.kind, start: m.start, end: m.end, err: m.err, tid: arr(&m.tid, "trace id")?, virt };
    Ok((arr(&m.key, "span key")?, p, m.new_key))
}

fn trace(m: TraceMsg, names: &mut Names) -> PyResult<([u8; 16], Trace)> {
    let services: BTreeSet<Name> = m.services.into_iter().map(|s| names.get(s)).collect();
    Ok((arr(&m.tid, "trace id")?, Trace {
        start: m.start, end: m.end, spans: m.spans, error: m.error, services,
        root_service: names.get(m.root_service), root_name: names.get(m.root_name), last: m.last,
        real_root: m.real_root, queued: m.queued, packed: m.packed, kept: m.kept, peers: m.peers,
    }))
}

pub fn load(data: &[u8], namer: Py<PyAny>) -> PyResult<Pairer> {
    let m = StateMsg::decode(data).map_err(|e| bad(&e.to_string()))?;
    if m.counters.len() != 14 || m.ws == 0 || m.max_pending == 0 || m.max_traces == 0 {
        return Err(bad("settings or counters"));
    }
    let mut p = Pairer::empty(m.wait, m.max_pending as usize, m.ws, m.max_traces as usize, m.max_kept,
                              m.max_exemplars as usize, namer);
    p.counters.copy_from_slice(&m.counters);
    let mut names = Names(HashMap::new());
    for c in m.clients {
        let (k, v, _) = pend(c, &mut names)?;
        p.clients.insert(k, v);
    }
    let mut current: Option<([u8; 24], Vec<Pend>)> = None;
    for s in m.servers {
        let (k, v, new_key) = pend(s, &mut names)?;
        match &mut current {
            Some((ck, lst)) if !new_key && *ck == k => lst.push(v),
            _ => {
                if let Some((ck, lst)) = current.take() {
                    p.servers.insert(ck, lst);
                }
                current = Some((k, vec![v]));
            }
        }
        p.n_servers += 1;
    }
    if let Some((ck, lst)) = current.take() {
        p.servers.insert(ck, lst);
    }
    for c in m.producers {
        let (k, v, _) = pend(c, &mut names)?;
        p.producers.insert(k, v);
    }
    for o in m.obs {
        // span durations fall in buckets [bucket_of(2 ns), bucket_of(2^20 s)] = [-925, 639]
        if o.hist_index.len() != o.hist_count.len() || o.shape > 5 || o.mark > 2
            || o.hist_index.iter().any(|&i| !(-1024..=1024).contains(&i)) {
            return Err(bad("observation"));
        }
        let key = ObsKey { window: o.window, source: names.get(o.source), target: names.get(o.target),
                           s_cluster: o.s_cluster.map(|c| names.get(c)), t_cluster: o.t_cluster.map(|c| names.get(c)),
                           shape: o.shape as u8 };
        let mut exemplars = Vec::new();
        for e in &o.exemplars {
            exemplars.push(arr::<16>(e, "exemplar")?);
        }
        let acc = Acc { requests: o.requests, errors: o.errors,
                        hist: o.hist_index.into_iter().zip(o.hist_count).collect(), zero: o.zero,
                        lat_ns: i128::from_le_bytes(arr(&o.lat_ns, "latency sum")?), first: o.first, last: o.last,
                        exemplars, mark: o.mark as u8 };
        p.obs_index.insert(key.clone(), p.obs.len());
        p.obs.push((key, acc));
    }
    for t in m.traces {
        let (k, v) = trace(t, &mut names)?;
        p.traces.insert(k, v);
    }
    for t in m.summaries {
        p.summaries.push(trace(t, &mut names)?);
    }
    Ok(p)
}
