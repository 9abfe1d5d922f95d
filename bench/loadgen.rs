//! The load generator of `make bench` (rows C, D and E): transfers through the real HTTP or
//! gRPC API from many concurrent clients, each request authenticated as the owner of the
//! from-account. Built only with `--features bench`, so it costs nothing in normal builds.
//!
//! `login` turns `username password` lines into `token account_id` lines (the bench names each
//! user after its account id). `run` drives transfers for a fixed time after a warm-up and prints
//! one JSON line: transfers done (2xx / OK only), transfers/s, p50, p99, errors by code. `flood`
//! logs one user in from many clients at once, as fast as they can, for a fixed time (the
//! memory and fairness check of `make fault`), and prints the answers by status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use simplebank::grpc::pb::{self, simple_bank_client::SimpleBankClient};
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Statement {
    MoveMoney,
    MoveMoneyBatch,
}

#[derive(Subcommand)]
enum Command {
    /// Print one of the money path's statements as the server sends it (for pgbench).
    Sql {
        #[arg(value_enum)]
        statement: Statement,
    },
    /// Log every user in over HTTP; write `token account_id` lines.
    Login {
        #[arg(long)]
        http: String,
        #[arg(long)]
        users: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// `--concurrency` clients logging `--username` in back to back for `--seconds`; prints
    /// `{"requests", "by_status"}`. A 503's Retry-After is ignored, as a flood does, unless
    /// `--honor-retry-after` (as a well-behaved app retrying does).
    Flood {
        #[arg(long)]
        http: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        honor_retry_after: bool,
    },
    /// Transfers for `--seconds` after `--warmup`.
    Run {
        #[arg(long, value_enum)]
        api: Api,
        /// `http://host:port` of the chosen API.
        #[arg(long)]
        url: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        seconds: u64,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Every transfer between the first two accounts, both directions.
        #[arg(long)]
        hot: bool,
        /// Every transfer from the first line's account, with the first line's token, to the
        /// second line's account (with a stranger's token first: `make fault`'s isolation attack).
        #[arg(long)]
        one_way: bool,
        /// A fresh `Idempotency-Key` on every transfer.
        #[arg(long)]
        keyed: bool,
        /// At most this many transfers a second, all clients together (0: as fast as answered).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Also write every measured latency (µs, one per line) here, so that runs in parts
        /// can be merged into exact percentiles.
        #[arg(long)]
        latencies: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Api {
    Http,
    Grpc,
}

/// A small xorshift: enough randomness to spread accounts, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Sql { statement } => {
            println!(
                "{}",
                match statement {
                    Statement::MoveMoney => simplebank::store::MOVE_MONEY,
                    Statement::MoveMoneyBatch => simplebank::store::MOVE_MONEY_BATCH,
                }
            );
            Ok(())
        }
        Command::Login {
            http,
            users,
            out,
            concurrency,
        } => login(&http, &users, &out, concurrency).await,
        Command::Flood {
            http,
            username,
            password,
            concurrency,
            seconds,
            honor_retry_after,
        } => {
            flood(
                &http,
                &username,
                &password,
                concurrency,
                seconds,
                honor_retry_after,
            )
            .await
        }
        Command::Run {
            api,
            url,
            tokens,
            concurrency,
            seconds,
            warmup,
            hot,
            one_way,
            keyed,
            rate,
            latencies,
        } => {
            let shape = Shape {
                concurrency,
                seconds,
                warmup,
                hot,
                one_way,
                keyed,
                rate,
            };
            run(api, &url, &tokens, shape, latencies.as_deref()).await
        }
    }
}

async fn login(
    http: &str,
    users: &PathBuf,
    out: &PathBuf,
    concurrency: usize,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(users)?;
    let pending: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect();
    let pending = Arc::new(Mutex::new(pending));
    let done = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pending, done, client) = (pending.clone(), done.clone(), client.clone());
        let url = format!("{http}/v1/users/login");
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((username, password)) = pending.lock().await.pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                // Password hashing admits a few at a time and answers the rest 503 at once:
                // come back shortly, as a well-behaved client does.
                let reply: serde_json::Value = loop {
                    let response = client
                        .post(&url)
                        .json(&serde_json::json!({ "username": username, "password": password }))
                        .send()
                        .await?;
                    if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    break response.error_for_status()?.json().await?;
                };
                let token = reply["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                done.lock().await.push(format!("{token} {username}"));
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let lines = done.lock().await.join("\n");
    std::fs::write(out, lines + "\n")?;
    Ok(())
}

async fn flood(
    http: &str,
    username: &str,
    password: &str,
    concurrency: usize,
    seconds: u64,
    honor_retry_after: bool,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("{http}/v1/users/login");
    let body = serde_json::json!({ "username": username, "password": password });
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < stop_at {
                let mut pause = None;
                let status = match client.post(&url).json(&body).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16().to_string();
                        if honor_retry_after {
                            pause = response
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                                .map(Duration::from_secs);
                        }
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => "transport".to_owned(),
                };
                *by_status.entry(status).or_default() += 1;
                if let Some(pause) = pause {
                    let left = stop_at.saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(left)).await;
                }
            }
            by_status
        }));
    }
    let mut all: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        for (status, n) in task.await? {
            *all.entry(status).or_default() += n;
        }
    }
    let report = serde_json::json!({ "requests": all.values().sum::<u64>(), "by_status": all });
    println!("{report}");
    Ok(())
}

/// How a `run` loads the server.
struct Shape {
    concurrency: usize,
    seconds: u64,
    warmup: u64,
    hot: bool,
    one_way: bool,
    keyed: bool,
    rate: u64,
}

async fn run(
    api: Api,
    url: &str,
    tokens: &PathBuf,
    shape: Shape,
    latencies: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let Shape {
        concurrency,
        seconds,
        warmup,
        hot,
        one_way,
        keyed,
        rate,
    } = shape;
    // Each client's pause between transfers, for `--rate`.
    let pace = (rate > 0).then(|| Duration::from_secs_f64(concurrency as f64 / rate as f64));
    let users: Arc<Vec<(String, i64)>> = Arc::new(
        std::fs::read_to_string(tokens)?
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(t, a)| (t.to_owned(), a.parse().unwrap_or(0)))
            .collect(),
    );
    anyhow::ensure!(users.len() >= 2, "need at least two logged-in users");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    // A few HTTP/2 connections, each multiplexing a share of the clients.
    let mut channels = Vec::new();
    if let Api::Grpc = api {
        for _ in 0..concurrency.div_ceil(16) {
            channels.push(Channel::from_shared(url.to_owned())?.connect().await?);
        }
    }
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(warmup);
    let stop_at = measure_from + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let users = users.clone();
        let http = http.clone();
        let grpc = channels
            .get(worker % channels.len().max(1))
            .cloned()
            .map(SimpleBankClient::new);
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((worker as u64 + 1) * 0x1000_0001));
            let mut tally = Tally::default();
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    return tally;
                }
                let (from, to) = if one_way {
                    (0, 1)
                } else if hot {
                    if rng.below(2) == 0 { (0, 1) } else { (1, 0) }
                } else {
                    let from = rng.below(users.len());
                    let mut to = rng.below(users.len() - 1);
                    if to >= from {
                        to += 1;
                    }
                    (from, to)
                };
                let (token, from_account) = &users[from];
                let to_account = users[to].1;
                let key = keyed.then(|| uuid::Uuid::new_v4().to_string());
                let outcome = match &grpc {
                    Some(client) => {
                        let client = client.clone();
                        grpc_transfer(client, token, *from_account, to_account, key).await
                    }
                    None => http_transfer(&http, &url, token, *from_account, to_account, key).await,
                };
                let took = now.elapsed();
                if let Some(pace) = pace {
                    tokio::time::sleep_until((now + pace).into()).await;
                }
                if now >= measure_from {
                    match outcome {
                        Ok(()) => tally.latencies_us.push(took.as_micros() as u64),
                        Err(code) => *tally.errors.entry(code).or_default() += 1,
                    }
                }
            }
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies_us.extend(tally.latencies_us);
        for (code, n) in tally.errors {
            *all.errors.entry(code).or_default() += n;
        }
    }
    all.latencies_us.sort_unstable();
    if let Some(path) = latencies {
        let lines: Vec<String> = all.latencies_us.iter().map(u64::to_string).collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    let percentile = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((all.latencies_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
        all.latencies_us[index] as f64 / 1000.0
    };
    let report = serde_json::json!({
        "done": all.latencies_us.len(),
        "tps": all.latencies_us.len() as f64 / seconds as f64,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "errors": all.errors,
    });
    println!("{report}");
    Ok(())
}

async fn http_transfer(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    from: i64,
    to: i64,
    key: Option<String>,
) -> Result<(), String> {
    let mut request = http.post(format!("{url}/v1/transfers"));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request
        .bearer_auth(token)
        .json(&serde_json::json!({
            "from_account_id": from, "to_account_id": to, "amount": 1, "currency": "USD"
        }))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    if response.status().is_success() {
        let _ = response.bytes().await;
        return Ok(());
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Err(body["error"]["code"]
        .as_str()
        .unwrap_or("unreadable")
        .to_owned())
}

async fn grpc_transfer(
    mut client: SimpleBankClient<Channel>,
    token: &str,
    from: i64,
    to: i64,
    key: Option<String>,
) -> Result<(), String> {
    let mut request = tonic::Request::new(pb::CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount: 1,
        currency: "USD".into(),
        ..Default::default()
    });
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "token".to_owned())?;
    request.metadata_mut().insert("authorization", bearer);
    if let Some(key) = key {
        let key = key.parse().map_err(|_| "key".to_owned())?;
        request.metadata_mut().insert("idempotency-key", key);
    }
    client
        .create_transfer(request)
        .await
        .map(drop)
        .map_err(|status| format!("{:?}", status.code()))
}
