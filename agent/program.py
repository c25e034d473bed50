"""The BPF program: TCP connections from three tracepoints, bytes summed in the kernel.

Only tracepoints are used (this kernel has no kprobes, and fentry is refused), and only their
fields are read, plus the socket's network namespace through offsets taken from the running
kernel's BTF (:mod:`agent.btf`):

* ``sock:inet_sock_set_state``: CLOSE->SYN_SENT opens a *client* entry (the caller's connect():
  pid, comm and cgroup are the local process); LISTEN->SYN_RECV opens a *server* entry (softirq:
  no process yet); ->ESTABLISHED fills addresses and ports (set by then); CLOSE->LISTEN remembers a
  listener's process by (netns, port); ->CLOSE marks the end (a connection that never got
  established is dropped there, counted).
* ``tcp:tcp_destroy_sock``: the socket is gone, so nothing more can be read from it: the entry is
  copied to the ring buffer once, with its totals, and deleted. Not at ->CLOSE: a FIN that closes a
  half-closed client does so in softirq, before the process has read the reply still queued.
* ``sock:sock_send_length`` / ``sock:sock_recv_length``: exact byte counts, added to the entry of
  the socket (atomic adds). The first of them on a server entry names its process (it runs in the
  accepting process's syscall); a server connection that never sent nor received takes the
  listener's process at close.

At a process's first connection its command line is copied into ``cmdlines`` (an LRU hash by
tgid, through offsets from the kernel's BTF): user space reads ``/proc`` while a process lives,
and this copy when a short-lived one is already gone.

The entries live in ``conns`` (a hash keyed by socket address); user space reads it once per
reporting interval for the byte counts of connections still open, and otherwise only sees one
ring-buffer record per closed connection, consumed in batches. A record that does not fit in the
ring buffer, an entry that does not fit in ``conns``, and connects that never got established are
counted in ``counters`` (per CPU): nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.btf import CmdlineOffsets, NetnsOffsets

ROLE_CLIENT, ROLE_SERVER = 1, 2
KIND_CLOSE = 1
PID_FROM_SYSCALL, PID_FROM_LISTENER = 1, 2

#: Indexes of ``counters``; names are the Prometheus metric stems (see :mod:`agent.metrics`).
COUNTERS = (
    "state_events",  # inet_sock_set_state hits (TCP)
    "send_events",  # sock_send_length hits with bytes (TCP)
    "recv_events",  # sock_recv_length hits with bytes (TCP)
    "ring_lost",  # records that did not fit in the ring buffer
    "table_full",  # connections not tracked because ``conns`` was full
    "not_established",  # connects that failed before ESTABLISHED (not reported)
    "listeners_full",  # listeners not remembered because their table was full
)

#: One ring-buffer record, and the value of a ``conns`` entry (same layout).
CONN = np.dtype(
    [
        ("start_ns", "<u8"),  # CLOCK_MONOTONIC: SYN_SENT (client) or SYN_RECV (server)
        ("last_ns", "<u8"),  # last send/recv
        ("end_ns", "<u8"),  # close (records only)
        ("sent", "<u8"),
        ("received", "<u8"),
        ("cgroup", "<u8"),  # cgroup v2 id of the local process
        ("sk", "<u8"),  # socket address: with start_ns, the identity of one connection
        ("pid", "<u4"),  # tgid of the local process, 0 if not known
        ("netns", "<u4"),  # network namespace inode, 0 if not known
        ("lport", "<u2"),
        ("rport", "<u2"),
        ("role", "u1"),
        ("kind", "u1"),  # KIND_CLOSE (records only)
        ("established", "u1"),
        ("pid_source", "u1"),
        ("laddr", "S16"),  # IPv6, or IPv4-mapped
        ("raddr", "S16"),
        ("comm", "S16"),
    ]
)
assert CONN.itemsize == 120

_SOURCE = r"""
#include <linux/sched.h>

#define AF_INET 2
#define AF_INET6 10
#define PROTO_TCP 6
#define MSG_PEEK_FLAG 2
#define S_ESTABLISHED 1
#define S_SYN_SENT 2
#define S_SYN_RECV 3
#define S_CLOSE 7
#define S_LISTEN 10

struct conn_t {
    u64 start_ns;
    u64 last_ns;
    u64 end_ns;
    u64 sent;
    u64 received;
    u64 cgroup;
    u64 sk;
    u32 pid;
    u32 netns;
    u16 lport;
    u16 rport;
    u8 role;
    u8 kind;
    u8 established;
    u8 pid_source;
    u8 laddr[16];
    u8 raddr[16];
    char comm[16];
};

struct lkey_t {
    u32 netns;
    u32 port;
};

struct lval_t {
    u64 cgroup;
    u64 since_ns;
    u32 pid;
    u32 pad;
    char comm[16];
};

BPF_HASH(conns, u64, struct conn_t, MAX_CONNS);
BPF_HASH(listeners, struct lkey_t, struct lval_t, MAX_LISTENERS);
BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_PERCPU_ARRAY(counters, u64, N_COUNTERS);

struct cmd_t {
    u32 len;
    char args[CMDLINE_BYTES];
};
// tgid -> the start of its command line, captured at its first connection (user space reads /proc
// while the process lives; this is for processes that are gone by then, and deletes what it read).
BPF_TABLE("lru_hash", u32, struct cmd_t, cmdlines, MAX_PROCESSES);
BPF_PERCPU_ARRAY(cmd_scratch, struct cmd_t, 1);

static __always_inline void count(int i) {
    u64 *c = counters.lookup(&i);
    if (c)
        (*c)++;
}

static __always_inline u32 sk_netns(const void *sk) {
    u32 inum = 0;
#ifdef SK_NET_OFF
    void *net = 0;
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + SK_NET_OFF);
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), (const char *)net + NET_INUM_OFF);
#endif
    return inum;
}

static __always_inline void remember_cmdline(u32 tgid) {
#ifdef TASK_MM_OFF
    if (cmdlines.lookup(&tgid))
        return;
    int zero = 0;
    struct cmd_t *cmd = cmd_scratch.lookup(&zero);
    if (!cmd)
        return;
    void *task = (void *)bpf_get_current_task();
    void *mm = 0;
    u64 start = 0, end = 0;
    bpf_probe_read_kernel(&mm, sizeof(mm), (char *)task + TASK_MM_OFF);
    if (!mm)
        return;
    bpf_probe_read_kernel(&start, sizeof(start), (char *)mm + MM_ARG_START_OFF);
    bpf_probe_read_kernel(&end, sizeof(end), (char *)mm + MM_ARG_END_OFF);
    if (end <= start)
        return;
    u64 len = end - start;
    if (len > CMDLINE_BYTES)
        len = CMDLINE_BYTES;
    len &= (CMDLINE_BYTES * 2 - 1);
    if (len == 0 || len > CMDLINE_BYTES)
        return;
    if (bpf_probe_read_user(cmd->args, len, (void *)start))
        return;
    cmd->len = len;
    cmdlines.update(&tgid, cmd);
#endif
}

static __always_inline void set_process(struct conn_t *c) {
    c->pid = bpf_get_current_pid_tgid() >> 32;
    remember_cmdline(c->pid);
    c->cgroup = bpf_get_current_cgroup_id();
    c->pid_source = PID_FROM_SYSCALL;
    bpf_get_current_comm(&c->comm, sizeof(c->comm));
}

static __always_inline void submit(struct conn_t *c) {
    // No wake-up: the reader drains the ring on a timer, so a busy node costs no wake-up per record.
    if (events.ringbuf_output(c, sizeof(*c), BPF_RB_NO_WAKEUP))
        count(C_RING_LOST);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != PROTO_TCP)
        return 0;
    count(C_STATE_EVENTS);
    u64 sk = (u64)args->skaddr;
    int os = args->oldstate;
    int ns = args->newstate;
    if (os == S_CLOSE && (ns == S_SYN_SENT || ns == S_LISTEN)) {
        if (ns == S_LISTEN) {
            struct lkey_t k = {.netns = sk_netns(args->skaddr), .port = args->sport};
            struct lval_t v = {};
            v.pid = bpf_get_current_pid_tgid() >> 32;
            v.cgroup = bpf_get_current_cgroup_id();
            v.since_ns = bpf_ktime_get_ns();
            bpf_get_current_comm(&v.comm, sizeof(v.comm));
            if (listeners.update(&k, &v))
                count(C_LISTENERS_FULL);
            return 0;
        }
        struct conn_t c = {};
        c.start_ns = bpf_ktime_get_ns();
        c.sk = sk;
        c.role = ROLE_CLIENT;
        c.netns = sk_netns(args->skaddr);
        set_process(&c);
        if (conns.update(&sk, &c))
            count(C_TABLE_FULL);
        return 0;
    }
    if (os == S_LISTEN && ns == S_SYN_RECV) {
        struct conn_t c = {};
        c.start_ns = bpf_ktime_get_ns();
        c.sk = sk;
        c.role = ROLE_SERVER;
        c.netns = sk_netns(args->skaddr);
        if (conns.update(&sk, &c))
            count(C_TABLE_FULL);
        return 0;
    }
    if (os == S_LISTEN && ns == S_CLOSE) {
        struct lkey_t k = {.netns = sk_netns(args->skaddr), .port = args->sport};
        listeners.delete(&k);
        return 0;
    }
    struct conn_t *c = conns.lookup(&sk);
    if (!c)
        return 0;
    if (ns == S_ESTABLISHED && (os == S_SYN_SENT || os == S_SYN_RECV)) {
        c->established = 1;
        c->lport = args->sport;
        c->rport = args->dport;
        if (args->family == AF_INET) {
            c->laddr[10] = 0xff;
            c->laddr[11] = 0xff;
            c->raddr[10] = 0xff;
            c->raddr[11] = 0xff;
            __builtin_memcpy(&c->laddr[12], args->saddr, 4);
            __builtin_memcpy(&c->raddr[12], args->daddr, 4);
        } else {
            __builtin_memcpy(c->laddr, args->saddr_v6, 16);
            __builtin_memcpy(c->raddr, args->daddr_v6, 16);
        }
        return 0;
    }
    if (ns != S_CLOSE)
        return 0;
    if (c->established) {
        // Closed, but the process may still read what is queued (a FIN closes a half-closed client
        // in softirq): the record leaves when the socket is destroyed.
        if (c->end_ns == 0)
            c->end_ns = bpf_ktime_get_ns();
        return 0;
    }
    count(C_NOT_ESTABLISHED);
    conns.delete(&sk);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_destroy_sock) {
    u64 sk = (u64)args->skaddr;
    struct conn_t *c = conns.lookup(&sk);
    if (!c)
        return 0;
    if (c->established) {
        if (c->end_ns == 0)
            c->end_ns = bpf_ktime_get_ns();
        c->kind = KIND_CLOSE;
        if (c->pid == 0) {
            struct lkey_t k = {.netns = c->netns, .port = c->lport};
            struct lval_t *l = listeners.lookup(&k);
            if (l) {
                c->pid = l->pid;
                c->cgroup = l->cgroup;
                c->pid_source = PID_FROM_LISTENER;
                __builtin_memcpy(c->comm, l->comm, sizeof(c->comm));
            }
        }
        submit(c);
    }
    conns.delete(&sk);
    return 0;
}

static __always_inline void account(const void *skp, int ret, int received) {
    u64 sk = (u64)skp;
    struct conn_t *c = conns.lookup(&sk);
    if (!c)
        return;
    if (received)
        __sync_fetch_and_add(&c->received, (u64)ret);
    else
        __sync_fetch_and_add(&c->sent, (u64)ret);
    c->last_ns = bpf_ktime_get_ns();
    if (c->pid_source != PID_FROM_SYSCALL)
        set_process(c);
}

TRACEPOINT_PROBE(sock, sock_send_length) {
    if (args->protocol != PROTO_TCP || args->ret <= 0)
        return 0;
    count(C_SEND_EVENTS);
    account(args->sk, args->ret, 0);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length) {
    if (args->protocol != PROTO_TCP || args->ret <= 0 || (args->flags & MSG_PEEK_FLAG))
        return 0;
    count(C_RECV_EVENTS);
    account(args->sk, args->ret, 1);
    return 0;
}
"""

#: Tracepoints the program attaches to (the preflight checks they exist).
TRACEPOINTS = ("sock/inet_sock_set_state", "sock/sock_send_length", "sock/sock_recv_length",
               "tcp/tcp_destroy_sock")


@dataclass(frozen=True, slots=True)
class ProgramConfig:
    max_connections: int = 65_536
    max_listeners: int = 4_096
    max_processes: int = 16_384  # command lines kept for processes that exit quickly
    cmdline_bytes: int = 256  # a power of two: how much of a command line is kept
    #: A power of two of at least one page; 128 bytes a record: 8 MiB hold 65,536 closed connections
    #: between two drains of the reader.
    ring_bytes: int = 8 * 1024 * 1024


def source(config: ProgramConfig, netns: NetnsOffsets | None, cmdline: CmdlineOffsets | None = None) -> str:
    """The C text with its constants. Without offsets, namespaces read as 0 (resolved from /proc) and
    command lines are not captured in the kernel (only /proc, while the process lives)."""
    if config.ring_bytes < 4096 or config.ring_bytes & (config.ring_bytes - 1):
        raise ValueError("the ring buffer size must be a power of two of at least 4096 bytes")
    defines = {
        "MAX_CONNS": config.max_connections,
        "MAX_LISTENERS": config.max_listeners,
        "RING_PAGES": config.ring_bytes // 4096,
        "N_COUNTERS": len(COUNTERS),
        "MAX_PROCESSES": config.max_processes,
        "CMDLINE_BYTES": config.cmdline_bytes,
        "ROLE_CLIENT": ROLE_CLIENT,
        "ROLE_SERVER": ROLE_SERVER,
        "KIND_CLOSE": KIND_CLOSE,
        "PID_FROM_SYSCALL": PID_FROM_SYSCALL,
        "PID_FROM_LISTENER": PID_FROM_LISTENER,
    }
    defines.update({f"C_{name.upper()}": i for i, name in enumerate(COUNTERS)})
    if netns is not None:
        defines["SK_NET_OFF"] = netns.sk_net
        defines["NET_INUM_OFF"] = netns.net_inum
    if cmdline is not None:
        defines["TASK_MM_OFF"] = cmdline.task_mm
        defines["MM_ARG_START_OFF"] = cmdline.arg_start
        defines["MM_ARG_END_OFF"] = cmdline.arg_end
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    return head + _SOURCE
