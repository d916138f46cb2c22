//! The command line (clap derive structs only; `cmd` runs them).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "dialin",
    version,
    about = "A dial-in conferencing bridge simulator: the auto attendant, conference IDs and their admin"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a bridge: owns the data folder and serves the admin API.
    Serve(ServeArgs),
    /// Administer tenants, users, conference IDs, meetings and emails.
    Admin(AdminArgs),
    /// Place one SIP call, press DTMF, and print the prompts heard and the outcome.
    Call(CallArgs),
    /// List the running bridge's recent calls (newest first).
    Calls(CallsArgs),
    /// Tell the conference ID reset story on a live in-process bridge, step
    /// by step, for an audience (`--fast` for CI).
    Demo(DemoArgs),
    /// Run scenario files (or folders of them), each on its own in-process
    /// bridge, or with --target on a bridge that already runs; exits
    /// non-zero if a scenario failed.
    Run(RunArgs),
    /// Drive many concurrent callers through the whole flow against an
    /// embedded bridge (default) or --target; reports outcomes, failures by
    /// cause, latency percentiles and revocation violations, and exits
    /// non-zero on any unexpected failure or violation.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// A running bridge: sip:HOST:PORT (dials --number) or sip:NUMBER@HOST:PORT.
    /// Default: an embedded bridge on loopback with a temporary data folder.
    #[arg(long)]
    pub target: Option<String>,
    /// The target's admin API (http://HOST:PORT): users are enabled and IDs
    /// reset through it, and each call's decision is read from its record.
    #[arg(long, requires = "target")]
    pub admin: Option<String>,
    /// The admin token for --admin.
    #[arg(long, env = "DIALIN_TOKEN", hide_env_values = true, requires = "admin")]
    pub token: Option<String>,
    /// Known-valid conference IDs, one a line, for a --target without admin access.
    #[arg(long, requires = "target")]
    pub ids: Option<PathBuf>,
    /// The number dialled when --target names none.
    #[arg(long, default_value = "+14255550100")]
    pub number: String,
    /// Calls started per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Calls in all (default 100 when --duration is not given either).
    #[arg(long)]
    pub calls: Option<u64>,
    /// Start calls for this long (e.g. 30s); with --calls, whichever ends first.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Calls at once, at most; the schedule waits for a free slot.
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// How callers send their keys: rfc4733, info, inband, or mix (each call picks one).
    #[arg(long, default_value = "mix", value_parser = ["rfc4733", "info", "inband", "mix"])]
    pub dtmf: String,
    /// How long each key is held: the tone or RFC 4733 event, or the INFO's
    /// Duration (at least 40ms with inband or mix, 20ms with rfc4733).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub dtmf_duration: std::time::Duration,
    /// The pause between keys (at least 40ms with inband or mix). With
    /// `--dtmf info --dtmf-duration 0 --dtmf-gap 0` each INFO goes as soon as
    /// the previous one is answered, as SIPp's INFO scenario sends them.
    #[arg(long, default_value = "60ms", value_parser = humantime::parse_duration)]
    pub dtmf_gap: std::time::Duration,
    /// Caller threads, each with its own SIP and RTP socket (default: one
    /// per core). One is SIPp's shape, and the cheapest per call when the
    /// bridge runs on the same cores.
    #[arg(long)]
    pub workers: Option<usize>,
    /// The fraction of calls (0 to 1) that enter an invalid ID, half unknown
    /// and half revoked; they must be rejected.
    #[arg(long, default_value_t = 0.0)]
    pub invalid_ratio: f64,
    /// Reset a random user's ID this often while the load runs (e.g. 2s);
    /// calls racing a reset are judged against its window.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub reset_every: Option<std::time::Duration>,
    /// Users enabled in the setup phase.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// The embedded bridge sends no prompt audio (signalling-only load).
    #[arg(long)]
    pub mute_prompts: bool,
    /// Whether callers send silence between key presses, as phones do
    /// (default: on, except with --dtmf info, where callers send no RTP at
    /// all, as SIPp's INFO scenario).
    #[arg(long)]
    pub caller_audio: Option<OnOff>,
    /// Seeds every random choice of the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Read the bridge's record (its decision) of 1 call in N (default:
    /// every call; 1 in 100 for a --target run without --invalid-ratio or
    /// --reset-every, so the bridge serves calls rather than records).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub check_every: Option<u64>,
    /// Give each call its own SIP and RTP sockets, as `dialin call` does,
    /// instead of the shared sockets of one worker per core.
    #[arg(long)]
    pub socket_per_call: bool,
    /// The most one call may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub call_timeout: std::time::Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No live progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario files, or folders whose `*.toml` files are all run.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// How many scenarios run at once (each has its own bridge).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Write JUnit XML here (one testsuite per file, one testcase per scenario).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write what each call heard as a WAV: DIR/<file stem>/<step>[-<n>].wav.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// No progress bar (it shows only on a terminal, for more than 3 files).
    #[arg(long)]
    pub no_progress: bool,
    /// Run on a bridge that already runs, whose SIP listens here
    /// (sip:HOST:PORT), instead of on a bridge of each scenario's own.
    /// Scenarios then run one at a time.
    #[arg(long, value_name = "sip:HOST:PORT")]
    pub target: Option<String>,
    /// With --target: the bridge's admin API (http://HOST:PORT); default:
    /// the one in the data folder's server.json.
    #[arg(long, value_name = "URL", requires = "target")]
    pub admin: Option<String>,
    /// With --target: the admin API's bearer token; default: the data
    /// folder's admin-token.
    #[arg(long, requires = "target", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// With --target: read the bearer token from this file.
    #[arg(long, value_name = "FILE", requires = "target")]
    pub token_file: Option<PathBuf>,
    /// With --target: the running bridge's data folder, where the admin URL
    /// and token are read when --admin or --token is not given.
    #[arg(
        long,
        value_name = "DIR",
        requires = "target",
        default_value = "./dialin-data"
    )]
    pub data: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// No pauses between steps (calls still take their real time).
    #[arg(long)]
    pub fast: bool,
    /// Keep the bridge's data folder here (default: a temporary folder,
    /// removed at the end).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where the demo bridge's SIP listens (port 0: any free port), e.g. a
    /// fixed port to dial in with a softphone during the demo.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sip: SocketAddr,
    /// Where the demo bridge's admin API listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
}

#[derive(Debug, Args)]
pub struct CallsArgs {
    /// The data folder of the running server.
    #[arg(long, default_value = "./dialin-data", env = "DIALIN_DATA")]
    pub data: PathBuf,
    /// Talk to the server at this URL instead (http://HOST:PORT).
    #[arg(long, env = "DIALIN_SERVER")]
    pub server: Option<String>,
    /// The admin token for --server (default: the data folder's admin-token).
    #[arg(long, env = "DIALIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the call records as JSON.
    #[arg(long)]
    pub json: bool,
    /// How many calls, at most.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Whom to call: sip:USER@HOST[:PORT], e.g. sip:+14255550100@127.0.0.1:5060.
    pub uri: String,
    /// Keys to press: 0-9 * # A-D; a comma pauses 500 ms (e.g. 1234567#).
    #[arg(long, default_value = "")]
    pub dtmf: String,
    /// How to send the keys: rfc4733 (RTP events), info (SIP INFO) or inband (tones).
    #[arg(long, default_value = "rfc4733", value_parser = ["rfc4733", "info", "inband"])]
    pub method: String,
    /// Press the first key this long after the answer instead of when the
    /// welcome prompt starts (e.g. 2s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub dtmf_after: Option<std::time::Duration>,
    /// The From URI (default `sip:caller@<local address>`).
    #[arg(long)]
    pub from: Option<String>,
    /// Hang up this long after hearing that the call joined a meeting.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub hangup_after: std::time::Duration,
    /// Never hang up: wait for the far end's BYE (or the timeout).
    #[arg(long, conflicts_with = "hangup_after")]
    pub wait_for_bye: bool,
    /// Give up (and hang up) after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Carry SIP over one TCP connection instead of UDP (as does
    /// `;transport=tcp` in the URI); RTP stays UDP.
    #[arg(long)]
    pub tcp: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write what the call heard as a WAV in DIR (created if missing),
    /// named by the Call-ID; 8 kHz mono 16-bit, at most 10 minutes.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Simulate a lossy path: lose this fraction (0 to 0.5) of the UDP
    /// datagrams, SIP and RTP, each way.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub loss: f64,
    /// With --loss: deliver this fraction (0 to 1) of the RTP packets after
    /// the next one, each way.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub reorder: f64,
    /// Seed for --loss and --reorder: the same seed loses the same SIP
    /// messages again (which RTP packets are lost also depends on timing).
    #[arg(long, default_value_t = 1)]
    pub loss_seed: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The data folder (store, outbox, admin token).
    #[arg(long, default_value = "./dialin-data", env = "DIALIN_DATA")]
    pub data: PathBuf,
    /// Where the HTTP admin API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub admin: SocketAddr,
    /// Also send emails to this SMTP relay (smtp://HOST[:PORT]).
    #[arg(long)]
    pub smtp: Option<String>,
    /// `real`, or `manual` (time stands still until POST /api/clock/advance),
    /// or `manual:TIME` to start at an RFC 3339 time.
    #[arg(long, default_value = "real")]
    pub clock: String,
    /// Where the SIP bridge listens, over UDP and TCP on the same port
    /// (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub sip: SocketAddr,
    /// RTP ports, one per call, on the SIP address's IP (FIRST-LAST).
    #[arg(long, default_value = "20000-20999")]
    pub rtp_ports: String,
    /// Ring (send 180 Ringing) this long before answering, e.g. 2s; 0 answers at once.
    #[arg(long, default_value = "0s")]
    pub ring: String,
    /// Calls at once; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 500)]
    pub max_calls: usize,
    /// Receive and send buffer of the SIP UDP socket, in bytes (0: the OS
    /// default). The kernel may grant less (Linux: net.core.rmem_max and
    /// wmem_max); the granted size is logged at start.
    #[arg(long, value_name = "BYTES", default_value_t = crate::net::sip::DEFAULT_SOCKET_BUFFER)]
    pub sip_socket_buffer: usize,
    /// A folder with your own recordings of the prompts (NAME.wav, 8 kHz mono
    /// 16-bit PCM); the shipped prompts by default.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Send no prompt audio (prompts still take their time): for
    /// signalling-only load.
    #[arg(long)]
    pub mute_prompts: bool,
    /// Append every call event (started, answered, digit, prompt, attempt,
    /// joined, left, ended with the call record) to this file, one JSON line each.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Failed attempts (not valid, malformed, no input) a caller gets in
    /// one call before "goodbye" and the BYE.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Guessing protection across calls: `on`, or `off` (for load tests
    /// that send many wrong IDs from one address).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub guard: String,
    /// Failed conference ID attempts from one source address (IPv6: one
    /// /64) within --guard-window that block it (403 on INVITE) for
    /// --guard-cooldown; 0 keys no source.
    #[arg(long, default_value_t = 10)]
    pub guard_failures: u32,
    /// The same for one caller ID (the From URI's user part); 0 keys no caller ID.
    #[arg(long, default_value_t = 10)]
    pub guard_caller_id_failures: u32,
    /// The sliding window failures are counted in, e.g. 10m.
    #[arg(long, default_value = "10m")]
    pub guard_window: String,
    /// How long a block lasts, e.g. 15m.
    #[arg(long, default_value = "15m")]
    pub guard_cooldown: String,
    /// Failed attempts across all sources within --guard-window that raise
    /// the global alarm (a distributed guess); 0 disables the alarm.
    #[arg(long, default_value_t = 100)]
    pub guard_alarm: u32,
    /// The most sources and caller IDs tracked at once (memory bound under
    /// a flood of spoofed sources).
    #[arg(long, default_value_t = 10_000)]
    pub guard_max_entries: usize,
    /// The largest SIP message (headers and body) taken, in bytes (1024 to
    /// 16777216); a larger request gets 413, a TCP connection is closed.
    #[arg(long, value_name = "BYTES", default_value_t = crate::sip::framing::DEFAULT_MAX_MESSAGE)]
    pub max_message: usize,
    /// Header fields one SIP message may carry (0: no limit; else 8 or
    /// more); more get 400 Too Many Headers.
    #[arg(long, value_name = "N", default_value_t = crate::sip::framing::DEFAULT_MAX_HEADERS)]
    pub max_headers: usize,
    /// The longest header field (folded lines included) in bytes (0: no
    /// limit; else 256 or more): longer gets 400 Header Line Too Long, a
    /// longer start line 414.
    #[arg(long, value_name = "BYTES", default_value_t = crate::sip::framing::DEFAULT_MAX_HEADER_LINE)]
    pub max_header_line: usize,
    /// Open SIP TCP connections one source address (IPv6: one /64) may
    /// hold; more are closed when accepted (0: no limit).
    #[arg(long, value_name = "N", default_value_t = crate::net::sip::DEFAULT_TCP_PER_SOURCE)]
    pub tcp_per_source: usize,
    /// Close a SIP TCP connection after this long with no bytes received
    /// and no call on it, e.g. 120s (a CRLF keep-alive counts; 0: never).
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub tcp_idle: String,
    /// Calls one source address (IPv6: one /64) may hold at once; more
    /// INVITEs get 503 with Retry-After (0: no limit). Behind a SIP proxy
    /// every call comes from the proxy: raise it or use 0.
    #[arg(long, value_name = "N", default_value_t = crate::net::sip::DEFAULT_CALLS_PER_SOURCE)]
    pub calls_per_source: usize,
    /// Bound the store (dialin.sqlite, in whole pages) to this many bytes:
    /// a change that would grow it further fails as on a full disk (HTTP 507
    /// store-full) while calls go on. For testing disk-full handling.
    #[arg(long, value_name = "BYTES")]
    pub store_max_bytes: Option<u64>,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The data folder: its running server is used, or the folder is opened directly.
    #[arg(
        long,
        default_value = "./dialin-data",
        env = "DIALIN_DATA",
        global = true
    )]
    pub data: PathBuf,
    /// Talk to the server at this URL instead (http://HOST:PORT).
    #[arg(long, env = "DIALIN_SERVER", global = true)]
    pub server: Option<String>,
    /// The admin token for --server (default: the data folder's admin-token).
    #[arg(long, env = "DIALIN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenant settings and dial-in numbers.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Users, their conference IDs and PINs.
    #[command(subcommand)]
    User(UserCommand),
    /// Meetings and their invitations.
    #[command(subcommand)]
    Meeting(MeetingCommand),
    /// Meeting migration jobs (the Meeting Update Tool).
    #[command(subcommand)]
    Migration(MigrationCommand),
    /// Emails sent to users.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The audit of revoked conference IDs.
    Revocations {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// What a caller entering this ID would get.
    Lookup { conference_id: String },
    /// The admin clock (advance works on a server started with --clock manual).
    #[command(subcommand)]
    Clock(ClockCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn as_bool(self) -> bool {
        matches!(self, OnOff::On)
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Show the tenant's settings and dial-in numbers.
    Show,
    /// Change tenant settings.
    Set {
        #[arg(long)]
        name: Option<String>,
        /// The mail domain emails are sent from.
        #[arg(long)]
        domain: Option<String>,
        /// static or dynamic-only.
        #[arg(long)]
        conference_id_mode: Option<String>,
        /// Email users automatically on enable and reset.
        #[arg(long)]
        send_emails: Option<OnOff>,
        /// Leader PIN length, 4 to 12.
        #[arg(long)]
        pin_length: Option<u8>,
        /// Queue a meeting migration automatically after a reset.
        #[arg(long)]
        migrate_meetings: Option<OnOff>,
    },
    /// Dial-in service numbers.
    #[command(subcommand)]
    Number(NumberCommand),
}

#[derive(Debug, Subcommand)]
pub enum NumberCommand {
    /// Add a dial-in number (+E.164, E.164 or tel: form).
    Add {
        number: String,
        #[arg(long)]
        toll_free: bool,
        /// Print it in emails and invitations.
        #[arg(long)]
        default: bool,
    },
    /// Remove a dial-in number.
    Remove { number: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user without enabling dial-in conferencing.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Enable a user for dial-in conferencing (creates the user if needed).
    Enable {
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// microsoft (default) or the third-party provider's name.
        #[arg(long)]
        provider: Option<String>,
        /// The third-party provider's dial-in numbers.
        #[arg(long = "provider-number")]
        provider_numbers: Vec<String>,
        /// Set this conference ID instead of a random one.
        #[arg(long)]
        conference_id: Option<String>,
        /// One of the tenant's numbers, printed first for this user.
        #[arg(long)]
        default_number: Option<String>,
        /// Move a user from another provider.
        #[arg(long)]
        replace_provider: bool,
        #[arg(long)]
        no_email: bool,
    },
    /// Show a user.
    Show { email: String },
    /// List users.
    List {
        /// Only enabled users.
        #[arg(long)]
        enabled: bool,
    },
    /// Reset the conference ID: a new random ID; the old one stops working at once.
    ResetId {
        email: String,
        /// Do not email the user.
        #[arg(long)]
        no_email: bool,
    },
    /// Set the conference ID by hand.
    SetId {
        email: String,
        conference_id: String,
        #[arg(long)]
        no_email: bool,
    },
    /// Reset the leader PIN (shown once).
    ResetPin {
        email: String,
        #[arg(long)]
        no_email: bool,
    },
    /// Email the conference ID and dial-in numbers (not the PIN).
    SendInfo { email: String },
    /// Disable dial-in conferencing; the user's IDs are revoked.
    Disable { email: String },
    /// Enable every user of a CSV file (columns: email, display_name, provider,
    /// conference_id, provider_numbers, default_service_number).
    Import {
        file: PathBuf,
        #[arg(long)]
        no_email: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MeetingCommand {
    /// Schedule a meeting; its invitation carries a conference ID.
    Schedule {
        #[arg(long)]
        organizer: String,
        #[arg(long)]
        subject: String,
        /// RFC 3339 time, or +DURATION from now (e.g. +2h).
        #[arg(long)]
        start: String,
    },
    /// List meetings, with whether each invitation is current, stale or migrated.
    List {
        #[arg(long)]
        organizer: Option<String>,
        /// Only invitations that carry a revoked ID.
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrationCommand {
    /// Queue a migration of the user's future meetings to their current ID.
    Start { email: String },
    /// Show migration jobs (all, or one user's).
    Status { email: Option<String> },
    /// Run the jobs that are due now.
    Run,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List emails.
    List {
        #[arg(long)]
        to: Option<String>,
    },
    /// Show one email with its text.
    Show { id: i64 },
    /// Retry delivery of queued emails now.
    Deliver,
}

#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    Show,
    /// Move the clock forward (e.g. 2h) and run what came due.
    Advance {
        by: String,
    },
}
