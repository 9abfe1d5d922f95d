//! Webhooks (SPEC §7): secrets, signatures, the SSRF rules, the fan-out of events into
//! deliveries, and the delivery worker (an `outbox::Outbox`).
//!
//! ## Secrets
//!
//! An endpoint's signing secret is never stored. It is `HMAC-SHA256(WEBHOOK_SECRET_KEY,
//! "simplebank webhook secret v1" || salt)`, where the 32-byte random salt is the endpoint's
//! row: a dump of the database alone cannot sign for any endpoint, and the server needs no
//! decryption step (deriving is one HMAC). The price: rotating `WEBHOOK_SECRET_KEY` changes every
//! endpoint's secret at once, so that key is for emergencies; a single endpoint rotates with
//! `rotate_secret` (a new salt; the old secret keeps signing too, as a second `v1,` signature,
//! for `ROTATION_OVERLAP`, so receivers can switch without losing a delivery).
//!
//! ## Delivery
//!
//! Standard Webhooks: `POST` with `webhook-id` (the event id), `webhook-timestamp` (Unix
//! seconds of this attempt) and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 over
//! `id.timestamp.body`), body `{"type", "timestamp", "data"}`. A 2xx is delivered; anything
//! else, a timeout or a refused connection is retried after `backoff` (doubling, with jitter)
//! until `retry_for` after the event was queued, then the delivery is failed. Redirects are not
//! followed (a 3xx is a failure). Receivers dedupe by `webhook-id`: delivery is at least once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use ring::hmac;
use secrecy::{ExposeSecret, SecretBox};
use tokio::sync::{Notify, watch};

use super::EventHub;
use crate::metrics::Metrics;
use crate::outbox::{self, Attempted, Outbox, Polling};
use crate::store::{AttemptOutcome, DueDelivery, NextStep, SigningSalts, Store, StoreError};

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);
/// The first retry comes this long after a failure (with jitter); each later one waits twice
/// the one before, up to `MAX_BACKOFF`.
const BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// How long a claimed delivery is hidden from other workers, in attempt timeouts: an attempt
/// always ends (timed out at worst) well within it, so no two workers ever send the same
/// attempt at once; a worker killed mid-attempt leaves its deliveries to come back after it.
const LEASE_TIMEOUTS: u32 = 3;
/// Events fanned out per round.
const FAN_OUT_BATCH: i64 = 1000;
/// How often the fan-out refreshes `webhook_outbox_lag_seconds`, at most.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// `WEBHOOK_SECRET_KEY`, `WEBHOOK_ALLOW_PRIVATE`, `WEBHOOK_RETRY_FOR`, `WEBHOOK_TIMEOUT`.
pub struct WebhookSettings {
    pub secret_key: SecretBox<[u8; 32]>,
    /// Deliver to loopback, private and link-local addresses too (development and tests).
    pub allow_private: bool,
    /// How long a failing delivery is retried before it is failed (default 24 h).
    pub retry_for: Duration,
    /// One attempt's limit (default 10 s).
    pub timeout: Duration,
    /// How often the worker looks for due deliveries when not woken.
    pub poll: Duration,
    /// Deliveries attempted at once per replica.
    pub concurrency: i64,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("secret_key", &"[REDACTED]")
            .field("allow_private", &self.allow_private)
            .field("retry_for", &self.retry_for)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookSettings {
    /// Defaults around `secret_key`.
    pub fn new(secret_key: [u8; 32]) -> Self {
        Self {
            secret_key: SecretBox::new(Box::new(secret_key)),
            allow_private: false,
            retry_for: Duration::from_secs(24 * 60 * 60),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            concurrency: 32,
        }
    }
}

/// Derives endpoint secrets from the server's key.
#[derive(Clone)]
pub struct Secrets {
    key: Arc<hmac::Key>,
}

impl Secrets {
    pub fn new(key: &SecretBox<[u8; 32]>) -> Self {
        Self {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret())),
        }
    }

    /// A fresh random salt, from the OS CSPRNG.
    pub fn new_salt() -> Result<[u8; 32], StoreError> {
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|_| {
            StoreError::Internal(sqlx::Error::Protocol("the OS random source failed".into()))
        })?;
        Ok(salt)
    }

    /// The endpoint secret for `salt`: 32 bytes.
    pub fn secret(&self, salt: &[u8]) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(b"simplebank webhook secret v1");
        context.update(salt);
        context.sign().as_ref().to_vec()
    }

    /// The secret as shown to the banker once: `whsec_` + base64.
    pub fn display(&self, salt: &[u8]) -> String {
        format!("whsec_{}", BASE64.encode(self.secret(salt)))
    }

    /// The `webhook-signature` header: one `v1,` signature per live secret, space-separated.
    pub fn signature_header(
        &self,
        salts: &SigningSalts,
        id: &str,
        timestamp: i64,
        body: &str,
    ) -> String {
        std::iter::once(&salts.current)
            .chain(salts.previous.as_ref())
            .map(|salt| sign(&self.secret(salt), id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `v1,` + base64(HMAC-SHA256(secret, "id.timestamp.body")).
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(context.sign().as_ref()))
}

/// The body of a delivery: `{"type", "timestamp", "data"}`.
pub fn delivery_body(event: &crate::store::Event) -> String {
    format!(
        r#"{{"type":"{}","timestamp":"{}","data":{}}}"#,
        event.kind,
        event.timestamp(),
        event.data
    )
}

/// Addresses a webhook may not reach unless `WEBHOOK_ALLOW_PRIVATE`: every block of IANA's
/// IPv4 and IPv6 special-purpose address registries that is not globally reachable, or that
/// leads somewhere other than the address it names (NAT64, 6to4, Teredo and IPv4-compatible
/// addresses reach an IPv4 host through a gateway), plus multicast and the reserved 240.0.0.0/4.
/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240 // reserved, 240.0.0.0/4
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGN)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 192 && b == 31 && c == 196) // AS112-v4
                || (a == 192 && b == 52 && c == 193) // AMT
                || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
                || (a == 192 && b == 175 && c == 48) // direct delegation AS112
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[..6] == [0; 6] // IPv4-compatible ::a.b.c.d (deprecated)
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64, 64:ff9b::/96 and 64:ff9b:1::/48
                || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only 100::/64
                || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments 2001::/23 (Teredo...)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[0] == 0x2002 // 6to4
                || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
                || s[0] == 0x5f00 // SRv6 SIDs
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        }
    }
}

/// Ports a webhook may use unless `WEBHOOK_ALLOW_PRIVATE`: the web's own. Anything else is how a
/// webhook would reach a database, a cache or an admin port of a public host.
pub const WEBHOOK_PORTS: [u16; 2] = [80, 443];

/// Checks a webhook URL as given by a banker: http(s), a host, no credentials, and (unless
/// `allow_private`) no address of `is_forbidden` among those it resolves to now. Deliveries
/// check again at connect time (`GuardedResolver`): DNS may change its answer.
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|_| "must be an absolute http(s) URL".to_owned())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if parsed.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let Some(host) = parsed.host_str() else {
        return Err("must name a host".into());
    };
    if allow_private {
        return Ok(());
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    if !WEBHOOK_PORTS.contains(&port) {
        return Err("must use port 80 or 443".into());
    }
    let addresses = resolve(host, port)
        .await
        .map_err(|_| "its host does not resolve".to_owned())?;
    if addresses.is_empty() || addresses.iter().any(|a| is_forbidden(a.ip())) {
        return Err("resolves to a loopback, private or link-local address".into());
    }
    Ok(())
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

/// The delivery client's resolver: the system's, with forbidden addresses removed. A name that
/// resolves only to them fails to connect, so a DNS answer that changed since the endpoint was
/// created cannot turn a webhook against the bank's own network.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed: Vec<SocketAddr> = resolve(&host, 0)
                .await?
                .into_iter()
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err("the host resolves only to private addresses".into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Delivers due webhook deliveries: the `outbox::Outbox` of `webhook_deliveries`.
#[derive(Clone)]
pub struct WebhookWorker {
    store: Store,
    client: reqwest::Client,
    secrets: Secrets,
    settings: Arc<WebhookSettings>,
    metrics: Arc<Metrics>,
    wakeup: Arc<Notify>,
}

impl WebhookWorker {
    pub fn new(
        store: Store,
        settings: Arc<WebhookSettings>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let mut client = reqwest::Client::builder()
            // HTTP(S)_PROXY from the environment would send every delivery through the proxy,
            // and the guarded resolver below would only ever see the proxy's name, never the
            // target's: the address guard would guard nothing.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(4)
            .user_agent("simplebank-webhooks/1");
        if !settings.allow_private {
            client = client.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Self {
            store,
            client: client.build()?,
            secrets: Secrets::new(&settings.secret_key),
            settings,
            metrics,
            wakeup: Arc::default(),
        })
    }

    /// Rung when the fan-out queued deliveries.
    pub fn wakeup(&self) -> Arc<Notify> {
        Arc::clone(&self.wakeup)
    }

    fn polling(&self) -> Polling {
        Polling {
            interval: self.settings.poll,
            batch: self.settings.concurrency,
            lease: self.settings.timeout * LEASE_TIMEOUTS,
        }
    }

    /// Delivers until `stopped`.
    pub async fn run(self, stopped: watch::Receiver<bool>) {
        let (polling, wakeup) = (self.polling(), self.wakeup());
        outbox::run(self, polling, wakeup, stopped).await;
    }

    /// One round (tests drive the worker this way).
    pub async fn deliver_due(&self) -> Result<outbox::Round, StoreError> {
        outbox::round(self, self.polling()).await
    }

    /// Sends one attempt; the receiver's status, or why there was none.
    async fn send(&self, due: &DueDelivery) -> (Option<u16>, Option<String>) {
        if !self.settings.allow_private
            && let Ok(url) = reqwest::Url::parse(&due.url)
            && let Some(host) = url.host_str()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            && is_forbidden(ip)
        {
            return (
                None,
                Some("refused: the URL names a private address".into()),
            );
        }
        let id = due.event.id.to_string();
        let timestamp = Utc::now().timestamp();
        let body = delivery_body(&due.event);
        let signature = self
            .secrets
            .signature_header(&due.salts, &id, timestamp, &body);
        let sent = self
            .client
            .post(&due.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                (Some(response.status().as_u16()), None)
            }
            Ok(response) => {
                let status = response.status();
                (
                    Some(status.as_u16()),
                    Some(format!("the receiver answered {status}")),
                )
            }
            Err(error) if error.is_timeout() => (
                None,
                Some(format!(
                    "timed out after {} s",
                    self.settings.timeout.as_secs()
                )),
            ),
            Err(error) if error.is_connect() => (None, Some("could not connect".into())),
            Err(_) => (None, Some("the request failed".into())),
        }
    }
}

#[async_trait::async_trait]
impl Outbox for WebhookWorker {
    type Item = DueDelivery;
    const NAME: &'static str = "webhook outbox";

    async fn claim(&self, batch: i64, lease: Duration) -> Result<Vec<DueDelivery>, StoreError> {
        self.store.claim_due_deliveries(batch, lease).await
    }

    async fn attempt(&self, due: DueDelivery) -> Result<Attempted, StoreError> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let (status_code, error) = if due.endpoint_deleted {
            (None, Some("the endpoint was deleted".to_owned()))
        } else {
            self.send(&due).await
        };
        let delivered = error.is_none();
        let next = if delivered {
            NextStep::Delivered
        } else {
            let wait = outbox::jitter(outbox::backoff(BACKOFF, MAX_BACKOFF, due.attempt));
            let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            let give_up_at = due.queued_at
                + chrono::Duration::from_std(self.settings.retry_for)
                    .unwrap_or(chrono::Duration::MAX);
            if due.endpoint_deleted || at > give_up_at {
                NextStep::Failed
            } else {
                NextStep::RetryAt(at)
            }
        };
        let outcome = AttemptOutcome {
            started_at,
            duration: clock.elapsed(),
            status_code,
            error,
            next,
        };
        outbox::record(|| {
            self.store
                .settle_delivery(due.delivery_id, due.attempt, &outcome)
        })
        .await?;
        let (metric, attempted) = match next {
            NextStep::Delivered => ("delivered", Attempted::Sent),
            NextStep::RetryAt(_) => ("retrying", Attempted::Retrying),
            NextStep::Failed => ("failed", Attempted::Abandoned),
        };
        self.metrics.webhook_delivery(metric);
        tracing::info!(
            delivery_id = due.delivery_id,
            event_id = due.event.id,
            attempt = due.attempt,
            status = status_code,
            outcome = metric,
            error = outcome.error.as_deref(),
            "webhook attempt"
        );
        Ok(attempted)
    }
}

/// Fans final events out into deliveries whenever the horizon moves (and every second, for
/// endpoints created meanwhile), waking the worker when it queued any; keeps the lag gauge.
pub async fn fan_out(
    store: Store,
    hub: EventHub,
    worker_wakeup: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut horizon = hub.horizon_changes();
    let mut lag_read = None;
    loop {
        tokio::select! {
            _ = horizon.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let upto = hub.horizon();
        loop {
            match store.fan_out_webhooks(upto, FAN_OUT_BATCH).await {
                Ok(round) => {
                    if round.deliveries > 0 {
                        worker_wakeup.notify_one();
                    }
                    if round.events < FAN_OUT_BATCH || !round.ours {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook fan-out failed; will retry");
                    break;
                }
            }
        }
        // The horizon moves every poll under load; the gauge needs no more than a reading a
        // second, and its query is not free.
        if lag_read.is_none_or(|at: Instant| at.elapsed() >= LAG_EVERY) {
            lag_read = Some(Instant::now());
            match store.webhook_lag_seconds().await {
                Ok(lag) => metrics.set_webhook_lag(lag),
                Err(error) => tracing::debug!(%error, "reading the webhook lag failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The Standard Webhooks specification's own example secret, id, timestamp and body.
        let secret = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
            // Each of the special-purpose blocks the review found missing.
            "64:ff9b::a00:1",
            "64:ff9b::808:808",
            "::10.0.0.1",
            "::8.8.8.8",
            "2002:a00:1::1",
            "2001::1",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.255",
            "fec0::1",
            "3fff::1",
            "100::1",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_before_they_are_stored() {
        assert!(
            check_url("http://127.0.0.1:9000/hook", false)
                .await
                .is_err()
        );
        assert!(check_url("http://[::1]/hook", false).await.is_err());
        assert!(check_url("http://localhost/hook", false).await.is_err());
        assert!(
            check_url("http://169.254.169.254/latest", false)
                .await
                .is_err()
        );
        assert!(check_url("ftp://example.com/", false).await.is_err());
        assert!(
            check_url("https://user:pw@example.com/", true)
                .await
                .is_err()
        );
        assert!(check_url("not a url", true).await.is_err());
        assert!(check_url("http://127.0.0.1:9000/hook", true).await.is_ok());
        assert!(check_url("https://93.184.216.34/hook", false).await.is_ok());
        // Only the web's ports reach a public host, unless private targets are allowed.
        let port = check_url("https://93.184.216.34:6379/", false).await;
        assert!(port.unwrap_err().contains("port"));
        assert!(
            check_url("http://93.184.216.34:80/hook", false)
                .await
                .is_ok()
        );
        assert!(check_url("http://93.184.216.34:6379/", true).await.is_ok());
    }

    #[test]
    fn a_rotation_signs_with_both_secrets() {
        let secrets = Secrets::new(&SecretBox::new(Box::new([7u8; 32])));
        let salts = SigningSalts {
            current: vec![1; 32],
            previous: Some(vec![2; 32]),
        };
        let header = secrets.signature_header(&salts, "5", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&secrets.secret(&[1; 32]), "5", 1, "{}"));
        assert_eq!(parts[1], sign(&secrets.secret(&[2; 32]), "5", 1, "{}"));
        assert_ne!(secrets.secret(&[1; 32]), secrets.secret(&[2; 32]));
        assert!(secrets.display(&[1; 32]).starts_with("whsec_"));
    }
}
