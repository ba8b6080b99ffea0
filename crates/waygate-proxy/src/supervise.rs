//! Per-upstream supervision, one task each: keeps one active health-check
//! task per current server, closes pooled connections idle past their
//! timeout (every [`SWEEP_EVERY`]), and resolves servers given by host name
//! again every `dns_refresh`, each address becoming a server. When the answers
//! change, a new generation of servers is swapped in atomically; servers
//! that did not change keep their state (health, ejections, latency) and
//! their connection pools. A failed resolution keeps the last known
//! addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use waygate_config::ServerAddr;
use waygate_upstream::{ServerSet, ServerState};

use crate::pool::Server;
use crate::runtime::{Members, Runtime, Upstream};

/// How often idle pooled connections are checked for expiry (an idle
/// connection lives at most this much past `pool_idle_timeout`) and for
/// parking (`pool::PARK_AFTER`, 250 ms): after a burst, its pooled
/// connections give their hyper state back within half a second (within
/// up to 1.25 s when this ran once a second), in time for the binary's
/// quiet-time purge to return that memory to the OS (BENCHMARKS.md,
/// "Idle keep-alive connections").
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Longest wait for one DNS answer.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Health-check tasks by server label; aborted when dropped (so aborting
/// the supervisor stops them too).
#[derive(Default)]
struct Checkers(HashMap<Arc<str>, AbortHandle>);

/// One supervisor task per upstream of the current generation. An
/// upstream carried over unchanged by a reload keeps its task; the tasks of
/// upstreams that went away are aborted (so are all, when dropped).
#[derive(Default)]
pub(crate) struct Supervisors(HashMap<usize, (Arc<Upstream>, AbortHandle)>);

impl Supervisors {
    pub(crate) fn sync(&mut self, rt: &Runtime) {
        let key = |u: &Arc<Upstream>| Arc::as_ptr(u) as usize;
        let now: Vec<usize> = rt.upstreams.iter().map(key).collect();
        self.0.retain(|k, (_, task)| {
            let keep = now.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        for u in &rt.upstreams {
            self.0.entry(key(u)).or_insert_with(|| {
                let task = tokio::spawn(supervise(u.clone())).abort_handle();
                (u.clone(), task)
            });
        }
    }
}

impl Drop for Supervisors {
    fn drop(&mut self) {
        for (_, task) in self.0.values() {
            task.abort();
        }
    }
}

/// Supervises one upstream until the task is aborted.
async fn supervise(u: Arc<Upstream>) {
    tokio::join!(sweep(&u), resolve_and_check(&u));
}

/// Closes expired idle connections of the upstream's current servers.
async fn sweep(u: &Upstream) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for pool in &u.members.load().pools {
            pool.sweep();
        }
    }
}

/// Keeps the health checkers and the resolved servers current.
async fn resolve_and_check(u: &Upstream) {
    let has_dns = u.entries.iter().any(|e| !e.addr.is_ip());
    if !has_dns && u.health_check.is_none() {
        return;
    }
    let mut checkers = Checkers::default();
    let mut known: HashMap<usize, Vec<SocketAddr>> = HashMap::new();
    loop {
        if has_dns {
            refresh(u, &mut known).await;
        }
        checkers.sync(u);
        if !has_dns {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(u.dns_refresh).await;
    }
}

/// Resolves every host-name entry and swaps in the new servers if the
/// addresses changed.
async fn refresh(u: &Upstream, known: &mut HashMap<usize, Vec<SocketAddr>>) {
    for (i, e) in u.entries.iter().enumerate() {
        if e.addr.is_ip() {
            continue;
        }
        let lookup = tokio::net::lookup_host((e.addr.host.as_str(), e.addr.port));
        match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => {
                let mut v: Vec<SocketAddr> = addrs.collect();
                v.sort();
                v.dedup();
                if v.is_empty() {
                    tracing::warn!(upstream = %u.name, host = %e.addr.host, "host name resolved to no address; keeping the last known addresses");
                } else {
                    known.insert(i, v);
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(upstream = %u.name, host = %e.addr.host, error = %err, "resolving failed; keeping the last known addresses");
            }
            Err(_) => {
                tracing::warn!(upstream = %u.name, host = %e.addr.host, "resolving timed out; keeping the last known addresses");
            }
        }
    }
    let mut desired: Vec<(ServerAddr, u32)> = Vec::new();
    for (i, e) in u.entries.iter().enumerate() {
        match known.get(&i) {
            Some(addrs) if !e.addr.is_ip() => {
                for a in addrs {
                    let addr = ServerAddr {
                        host: a.ip().to_string(),
                        port: a.port(),
                    };
                    desired.push((addr, e.weight));
                }
            }
            // An IP, or a name never resolved yet: resolved at connect time,
            // so a request still gets a truthful dns_error.
            _ => desired.push((e.addr.clone(), e.weight)),
        }
    }
    let mut seen = std::collections::HashSet::new();
    desired.retain(|(a, _)| seen.insert(a.to_string()));

    let current = u.members.load_full();
    let cur: Vec<(String, u32)> = current
        .set
        .servers()
        .iter()
        .map(|s| (s.label.to_string(), s.weight))
        .collect();
    let want: Vec<(String, u32)> = desired.iter().map(|(a, w)| (a.to_string(), *w)).collect();
    if cur == want {
        return;
    }
    let mut states = Vec::with_capacity(desired.len());
    let mut pools = Vec::with_capacity(desired.len());
    for (i, (addr, weight)) in desired.into_iter().enumerate() {
        let label = addr.to_string();
        match cur.iter().position(|(l, w)| *l == label && *w == weight) {
            Some(pos) => {
                states.push(current.set.servers()[pos].clone());
                pools.push(current.pools[pos].clone());
            }
            None => {
                states.push(Arc::new(ServerState::new(i, label.as_str().into(), weight)));
                pools.push(Arc::new(Server::new(
                    addr,
                    u.pool.clone(),
                    u.released.clone(),
                    u.conn_count.clone(),
                    u.parked_count.clone(),
                )));
            }
        }
    }
    let added: Vec<&str> = want
        .iter()
        .filter(|w| !cur.contains(w))
        .map(|(l, _)| l.as_str())
        .collect();
    let removed: Vec<&str> = cur
        .iter()
        .filter(|c| !want.contains(c))
        .map(|(l, _)| l.as_str())
        .collect();
    tracing::info!(upstream = %u.name, ?added, ?removed, "servers changed after DNS resolution");
    if let Some(q) = &u.queue {
        for s in &states {
            s.notify_on_release(q.notify.clone());
        }
    }
    let set = ServerSet::with_states(states, &u.balance_cfg, u.slow_start, u.outlier.clone())
        .with_max_in_flight(u.max_in_flight_per_server);
    u.members.store(Arc::new(Members { set, pools }));
}

// === impl Checkers ===

impl Checkers {
    /// One checker per current server: start the missing, stop the gone.
    fn sync(&mut self, u: &Upstream) {
        let Some(cfg) = &u.health_check else { return };
        let members = u.members.load_full();
        let labels: Vec<Arc<str>> = members
            .set
            .servers()
            .iter()
            .map(|s| s.label.clone())
            .collect();
        self.0.retain(|label, task| {
            let keep = labels.contains(label);
            if !keep {
                task.abort();
            }
            keep
        });
        for (state, pool) in members.set.servers().iter().zip(&members.pools) {
            if !self.0.contains_key(&state.label) {
                let task = waygate_upstream::run_checker(
                    state.clone(),
                    pool.addr.clone(),
                    cfg.clone(),
                    u.pool.transport(),
                );
                self.0
                    .insert(state.label.clone(), tokio::spawn(task).abort_handle());
            }
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}
