//! A read and control view of the running gateway for the admin API: the
//! upstreams with their servers' live state, and per-server admin state
//! (enable, drain, disable) changed without a reload.

use waygate_telemetry::AccessRecord;
use waygate_upstream::{AdminState, Health};

use crate::runtime::Gateway;

/// One upstream as the admin API shows it.
#[derive(Debug, Clone)]
pub struct UpstreamView {
    pub name: String,
    pub balance: &'static str,
    /// Too few servers available: every enabled server is used.
    pub panic: bool,
    pub in_flight: u32,
    pub servers: Vec<ServerView>,
}

/// One server's live state.
#[derive(Debug, Clone)]
pub struct ServerView {
    pub address: String,
    pub weight: u32,
    /// `healthy`, `unhealthy` or `unknown` (no checks, or none yet).
    pub health: &'static str,
    /// `enabled`, `draining` or `disabled`.
    pub admin: &'static str,
    /// Takes new requests right now.
    pub available: bool,
    pub ejected_for_ms: u64,
    pub ejections: u32,
    pub in_flight: u32,
    pub ewma_ms: f64,
    /// Why the server is in its state ("3 consecutive checks failed: ...").
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("no upstream `{0}`")]
    NoUpstream(String),
    #[error("upstream `{0}` has no server `{1}`")]
    NoServer(String, String),
}

// === impl Gateway ===

impl Gateway {
    /// The upstreams and their servers' live state.
    pub fn upstreams(&self) -> Vec<UpstreamView> {
        let now = waygate_upstream::now_ms();
        self.rt()
            .upstreams
            .iter()
            .map(|u| (u, u.members.load_full()))
            .map(|(u, m)| UpstreamView {
                name: u.name.to_string(),
                balance: u.balance,
                panic: m.set.in_panic(now),
                in_flight: u.limits.in_flight(),
                servers: m
                    .set
                    .servers()
                    .iter()
                    .map(|s| ServerView {
                        address: s.label.to_string(),
                        weight: s.weight,
                        health: match s.health() {
                            Health::Healthy => "healthy",
                            Health::Unhealthy => "unhealthy",
                            Health::Unknown => "unknown",
                        },
                        admin: admin_name(s.admin()),
                        available: s.is_available(now),
                        ejected_for_ms: s.ejected_for_ms(now),
                        ejections: s.ejections(),
                        in_flight: s.in_flight(),
                        ewma_ms: s.ewma_us() / 1000.0,
                        reason: s.reason(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The recorded gateway error of `request_id`, if still in the ring.
    pub fn error(&self, request_id: &str) -> Option<AccessRecord> {
        self.rt().errors.find(request_id)
    }

    /// The most recent gateway errors, newest first.
    pub fn recent_errors(&self, n: usize) -> Vec<AccessRecord> {
        self.rt().errors.recent(n)
    }

    /// Enables, drains or disables one server of an upstream. Draining and
    /// disabled servers take no new requests; in-flight ones finish.
    pub fn set_server_admin(
        &self,
        upstream: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), ControlError> {
        let rt = self.rt();
        let u = rt
            .upstreams
            .iter()
            .find(|u| &*u.name == upstream)
            .ok_or_else(|| ControlError::NoUpstream(upstream.to_owned()))?;
        let members = u.members.load();
        let s = members
            .set
            .servers()
            .iter()
            .find(|s| &*s.label == server)
            .ok_or_else(|| ControlError::NoServer(upstream.to_owned(), server.to_owned()))?;
        s.set_admin(state);
        members.set.invalidate();
        Ok(())
    }
}

pub fn admin_name(s: AdminState) -> &'static str {
    match s {
        AdminState::Enabled => "enabled",
        AdminState::Draining => "draining",
        AdminState::Disabled => "disabled",
    }
}
