//! What a load run does, checked at the boundary: every bad value gets an
//! error that names it and the range that would be right.

use std::time::Duration;

use crate::media::dtmf::DtmfMethod;

/// How the callers send their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfChoice {
    Rfc4733,
    Info,
    Inband,
    /// Each call picks one of the three at random.
    Mix,
}

impl DtmfChoice {
    pub fn parse(text: &str) -> Result<DtmfChoice, OptionsError> {
        match text.to_ascii_lowercase().as_str() {
            "rfc4733" => Ok(DtmfChoice::Rfc4733),
            "info" => Ok(DtmfChoice::Info),
            "inband" => Ok(DtmfChoice::Inband),
            "mix" => Ok(DtmfChoice::Mix),
            _ => Err(OptionsError::Dtmf(text.to_string())),
        }
    }

    /// The method for one call; `pick` (0, 1 or 2) chooses under `Mix`.
    pub fn method(self, pick: u8) -> DtmfMethod {
        match self {
            DtmfChoice::Rfc4733 => DtmfMethod::Rfc4733,
            DtmfChoice::Info => DtmfMethod::Info,
            DtmfChoice::Inband => DtmfMethod::Inband,
            DtmfChoice::Mix => match pick % 3 {
                0 => DtmfMethod::Rfc4733,
                1 => DtmfMethod::Info,
                _ => DtmfMethod::Inband,
            },
        }
    }
}

/// A load option out of range or a combination that can't work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionsError {
    #[error("--rate {0} is out of range: give calls per second above 0, up to {max}", max = LoadOptions::MAX_RATE)]
    Rate(f64),
    #[error("--calls 0 starts nothing: give at least 1")]
    Calls,
    #[error("--duration {0:?} is too short: give at least 1ms")]
    Duration(Duration),
    #[error("--concurrency {0} is out of range: give 1 to {max}", max = LoadOptions::MAX_CONCURRENCY)]
    Concurrency(usize),
    #[error(
        "--invalid-ratio {0} is out of range: give a fraction from 0 to 1 (0.2 = one call in five)"
    )]
    InvalidRatio(f64),
    #[error("--users {0} is out of range: give 1 to {max}", max = LoadOptions::MAX_USERS)]
    Users(usize),
    #[error("--reset-every {0:?} is too short: give at least 10ms")]
    ResetEvery(Duration),
    #[error("--dtmf {0:?} is not a method: use rfc4733, info, inband or mix")]
    Dtmf(String),
    #[error(
        "--check-every {0} must check every call when IDs are invalid or reset: give 1 (the judge needs each decision)"
    )]
    CheckEvery(u64),
    #[error("--call-timeout {0:?} is too short: give at least 1s")]
    CallTimeout(Duration),
    #[error(
        "--reset-every needs admin access to the bridge: give --admin URL and --token T with --target"
    )]
    ResetNeedsAdmin,
    #[error(
        "--target needs valid IDs: give --admin URL and --token T (users are enabled through the API), or --ids FILE"
    )]
    TargetNeedsIds,
    #[error("--{0} is only for --target: the embedded bridge has its own")]
    OnlyWithTarget(&'static str),
    #[error(
        "--dtmf-duration {}ms is out of range for --dtmf {dtmf}: give {}ms to {}ms (in-band tones need 40ms to be heard, an RFC 4733 event one 20ms packet)",
        .got.as_millis(), .min.as_millis(), LoadOptions::MAX_DTMF_DURATION.as_millis()
    )]
    DtmfDuration {
        got: Duration,
        dtmf: &'static str,
        min: Duration,
    },
    #[error(
        "--dtmf-gap {}ms is out of range for --dtmf {dtmf}: give {}ms to {max}ms (in-band keys need 40ms of silence between them; past {max}ms the bridge's inter-digit timeout may end the entry)",
        .got.as_millis(), .min.as_millis(), max = LoadOptions::MAX_DTMF_GAP.as_millis()
    )]
    DtmfGap {
        got: Duration,
        dtmf: &'static str,
        min: Duration,
    },
    #[error("--workers {0} is out of range: give 1 to {max}, or leave it out for one per core", max = LoadOptions::MAX_WORKERS)]
    Workers(usize),
}

/// The options of one load run. [`LoadOptions::new`] gives the defaults
/// `dialin load` documents.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// A running bridge (`sip:HOST:PORT` or `sip:NUMBER@HOST:PORT`);
    /// `None` starts an embedded one.
    pub target: Option<String>,
    /// The target's admin API (`http://HOST:PORT`).
    pub admin: Option<String>,
    pub token: Option<String>,
    /// Known-valid IDs, for a target without admin access.
    pub ids: Vec<crate::admin::ids::ConferenceId>,
    /// The number dialled when the target URI names none.
    pub number: String,
    /// Calls started per second.
    pub rate: f64,
    /// Calls in all; with `duration`, whichever bound comes first.
    pub calls: Option<u64>,
    pub duration: Option<Duration>,
    /// Calls at once, at most: the schedule waits for a free slot.
    pub concurrency: usize,
    pub dtmf: DtmfChoice,
    /// How long each key is held (the tone or event, or the INFO's
    /// `Duration`); the next key waits for it.
    pub dtmf_duration: Duration,
    /// The pause after each key before the next, and after the answer
    /// before the first (that one at most 20 ms). An INFO key also waits
    /// for the previous INFO's answer.
    pub dtmf_gap: Duration,
    /// Caller threads (each with its own sockets); `None`: one per core.
    pub workers: Option<usize>,
    /// The fraction of calls that enter an invalid ID (unknown or revoked,
    /// half each).
    pub invalid_ratio: f64,
    /// Reset a random user's ID this often while the load runs.
    pub reset_every: Option<Duration>,
    /// Users enabled in the setup phase (embedded, or through the admin API).
    pub users: usize,
    /// The embedded bridge sends no prompt audio.
    pub mute_prompts: bool,
    /// Callers send silence between key presses, as phones do; `None`:
    /// yes, except with INFO digits only (no RTP at all then, as SIPp's
    /// INFO scenario).
    pub caller_audio: Option<bool>,
    /// Seeds every random choice of the run (IDs, methods, resets, calls).
    pub seed: u64,
    /// Read the bridge's record (its decision) of 1 call in N; `None`:
    /// every call, except for a `--target` run that needs no judge (no
    /// invalid IDs, no resets), which checks 1 in 100 so the bridge's CPU
    /// goes to calls rather than to serving records.
    pub check_every: Option<u64>,
    /// Each call binds its own SIP and RTP sockets (`place_call`) instead of
    /// sharing the caller pool's few: slower, the way `dialin call` works.
    pub socket_per_call: bool,
    /// The most one call may take.
    pub call_timeout: Duration,
    /// Draw the live progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl LoadOptions {
    pub const MAX_RATE: f64 = 100_000.0;
    pub const MAX_CONCURRENCY: usize = 100_000;
    pub const MAX_USERS: usize = 100_000;
    pub const MAX_WORKERS: usize = 256;
    pub const MAX_DTMF_DURATION: Duration = Duration::from_secs(2);
    /// Below the bridge's 5 s inter-digit timeout.
    pub const MAX_DTMF_GAP: Duration = Duration::from_secs(4);
    /// Calls when neither `--calls` nor `--duration` is given.
    pub const DEFAULT_CALLS: u64 = 100;

    pub fn new() -> LoadOptions {
        LoadOptions {
            target: None,
            admin: None,
            token: None,
            ids: Vec::new(),
            number: "+14255550100".into(),
            rate: 50.0,
            calls: None,
            duration: None,
            concurrency: 500,
            dtmf: DtmfChoice::Mix,
            dtmf_duration: Duration::from_millis(100),
            dtmf_gap: Duration::from_millis(60),
            workers: None,
            invalid_ratio: 0.0,
            reset_every: None,
            users: 100,
            mute_prompts: false,
            caller_audio: None,
            seed: 1,
            socket_per_call: false,
            check_every: None,
            call_timeout: Duration::from_secs(30),
            progress: false,
        }
    }

    /// Checks every value, reporting the first that is wrong.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(self.rate > 0.0 && self.rate <= Self::MAX_RATE) {
            return Err(OptionsError::Rate(self.rate));
        }
        if self.calls == Some(0) {
            return Err(OptionsError::Calls);
        }
        if let Some(d) = self.duration
            && d < Duration::from_millis(1)
        {
            return Err(OptionsError::Duration(d));
        }
        if !(1..=Self::MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(OptionsError::Concurrency(self.concurrency));
        }
        if !(0.0..=1.0).contains(&self.invalid_ratio) {
            return Err(OptionsError::InvalidRatio(self.invalid_ratio));
        }
        if !(1..=Self::MAX_USERS).contains(&self.users) {
            return Err(OptionsError::Users(self.users));
        }
        if let Some(d) = self.reset_every
            && d < Duration::from_millis(10)
        {
            return Err(OptionsError::ResetEvery(d));
        }
        if let Some(n) = self.check_every
            && n != 1
            && (self.invalid_ratio > 0.0 || self.reset_every.is_some())
        {
            return Err(OptionsError::CheckEvery(n));
        }
        if self.call_timeout < Duration::from_secs(1) {
            return Err(OptionsError::CallTimeout(self.call_timeout));
        }
        self.validate_keys()?;
        if let Some(n) = self.workers
            && !(1..=Self::MAX_WORKERS).contains(&n)
        {
            return Err(OptionsError::Workers(n));
        }
        let admin = self.admin.is_some() && self.token.is_some();
        if self.target.is_some() {
            if self.reset_every.is_some() && !admin {
                return Err(OptionsError::ResetNeedsAdmin);
            }
            if !admin && self.ids.is_empty() {
                return Err(OptionsError::TargetNeedsIds);
            }
        } else {
            if self.admin.is_some() {
                return Err(OptionsError::OnlyWithTarget("admin"));
            }
            if self.token.is_some() {
                return Err(OptionsError::OnlyWithTarget("token"));
            }
            if !self.ids.is_empty() {
                return Err(OptionsError::OnlyWithTarget("ids"));
            }
        }
        Ok(())
    }

    /// Key timing: what each method needs to be heard. INFO needs no
    /// audio, so `--dtmf info --dtmf-duration 0 --dtmf-gap 0` sends each
    /// key as soon as the previous one is answered, as SIPp's INFO
    /// scenario does.
    fn validate_keys(&self) -> Result<(), OptionsError> {
        let ms = Duration::from_millis;
        let (dtmf, min_duration, min_gap) = match self.dtmf {
            DtmfChoice::Info => ("info", Duration::ZERO, Duration::ZERO),
            DtmfChoice::Rfc4733 => ("rfc4733", ms(20), Duration::ZERO),
            DtmfChoice::Inband => ("inband", ms(40), ms(40)),
            DtmfChoice::Mix => ("mix", ms(40), ms(40)),
        };
        if !(min_duration..=Self::MAX_DTMF_DURATION).contains(&self.dtmf_duration) {
            return Err(OptionsError::DtmfDuration {
                got: self.dtmf_duration,
                dtmf,
                min: min_duration,
            });
        }
        if !(min_gap..=Self::MAX_DTMF_GAP).contains(&self.dtmf_gap) {
            return Err(OptionsError::DtmfGap {
                got: self.dtmf_gap,
                dtmf,
                min: min_gap,
            });
        }
        Ok(())
    }

    /// Caller threads: `--workers`, or one per core.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Read the bridge's record of 1 call in this many.
    pub fn check_interval(&self) -> u64 {
        let judged = self.invalid_ratio > 0.0 || self.reset_every.is_some();
        match self.check_every {
            Some(n) => n.max(1),
            None if self.target.is_some() && !judged => 100,
            None => 1,
        }
    }

    /// Whether callers send silence between key presses.
    pub fn sends_silence(&self) -> bool {
        self.caller_audio.unwrap_or(self.dtmf != DtmfChoice::Info)
    }

    /// The calls bound: `--calls`, or the default when no bound was given.
    pub fn calls_bound(&self) -> Option<u64> {
        match (self.calls, self.duration) {
            (None, None) => Some(Self::DEFAULT_CALLS),
            (calls, _) => calls,
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_default_to_100_calls() {
        let o = LoadOptions::new();
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(o.calls_bound(), Some(100));
        let timed = LoadOptions {
            duration: Some(Duration::from_secs(5)),
            ..LoadOptions::new()
        };
        assert_eq!(timed.calls_bound(), None);
    }

    #[test]
    fn key_timing_is_checked_against_what_each_method_needs() {
        let ms = Duration::from_millis;
        let with = |dtmf, duration, gap| LoadOptions {
            dtmf,
            dtmf_duration: duration,
            dtmf_gap: gap,
            ..LoadOptions::new()
        };
        // INFO needs no audio: back to back is fine, as SIPp sends them.
        assert_eq!(with(DtmfChoice::Info, ms(0), ms(0)).validate(), Ok(()));
        assert_eq!(with(DtmfChoice::Rfc4733, ms(20), ms(0)).validate(), Ok(()));
        let err = with(DtmfChoice::Rfc4733, ms(10), ms(0))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--dtmf-duration 10ms") && err.contains("rfc4733"),
            "{err}"
        );
        assert!(err.contains("give 20ms to 2000ms"), "{err}");
        // In-band (and mix, which has in-band calls) needs tone and silence.
        for dtmf in [DtmfChoice::Inband, DtmfChoice::Mix] {
            assert!(matches!(
                with(dtmf, ms(30), ms(60)).validate(),
                Err(OptionsError::DtmfDuration { .. })
            ));
            let err = with(dtmf, ms(100), ms(0))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--dtmf-gap 0ms") && err.contains("give 40ms to 4000ms"),
                "{err}"
            );
        }
        let long = with(DtmfChoice::Info, ms(0), Duration::from_secs(6));
        let err = long.validate().unwrap_err().to_string();
        assert!(err.contains("inter-digit timeout"), "{err}");
        let workers = LoadOptions {
            workers: Some(0),
            ..LoadOptions::new()
        };
        let err = workers.validate().unwrap_err().to_string();
        assert!(
            err.contains("--workers 0") && err.contains("one per core"),
            "{err}"
        );
        assert_eq!(
            LoadOptions {
                workers: Some(1),
                ..LoadOptions::new()
            }
            .worker_count(),
            1
        );
    }

    #[test]
    fn bad_values_name_the_flag_and_the_range() {
        let zero_rate = LoadOptions {
            rate: 0.0,
            ..LoadOptions::new()
        };
        let err = zero_rate.validate().unwrap_err().to_string();
        assert!(err.contains("--rate 0") && err.contains("above 0"), "{err}");
        let nan = LoadOptions {
            rate: f64::NAN,
            ..LoadOptions::new()
        };
        assert!(matches!(nan.validate(), Err(OptionsError::Rate(_))));
        let ratio = LoadOptions {
            invalid_ratio: 1.5,
            ..LoadOptions::new()
        };
        let err = ratio.validate().unwrap_err().to_string();
        assert!(
            err.contains("--invalid-ratio 1.5") && err.contains("from 0 to 1"),
            "{err}"
        );
        let calls = LoadOptions {
            calls: Some(0),
            ..LoadOptions::new()
        };
        assert_eq!(calls.validate(), Err(OptionsError::Calls));
        assert!(
            DtmfChoice::parse("sms")
                .unwrap_err()
                .to_string()
                .contains("rfc4733, info, inband or mix")
        );
    }

    #[test]
    fn a_target_needs_ids_or_admin_and_resets_need_admin() {
        let bare = LoadOptions {
            target: Some("sip:127.0.0.1:5060".into()),
            ..LoadOptions::new()
        };
        assert_eq!(bare.validate(), Err(OptionsError::TargetNeedsIds));
        let with_ids = LoadOptions {
            ids: vec!["1234567".parse().unwrap()],
            reset_every: Some(Duration::from_secs(1)),
            ..bare.clone()
        };
        assert_eq!(with_ids.validate(), Err(OptionsError::ResetNeedsAdmin));
        let admin = LoadOptions {
            admin: Some("http://127.0.0.1:8080".into()),
            token: Some("t".into()),
            reset_every: Some(Duration::from_secs(1)),
            ..bare
        };
        assert_eq!(admin.validate(), Ok(()));
        let embedded_admin = LoadOptions {
            admin: Some("http://127.0.0.1:8080".into()),
            ..LoadOptions::new()
        };
        assert_eq!(
            embedded_admin.validate(),
            Err(OptionsError::OnlyWithTarget("admin"))
        );
    }

    #[test]
    fn info_callers_are_silent_unless_asked() {
        let info = LoadOptions {
            dtmf: DtmfChoice::Info,
            ..LoadOptions::new()
        };
        assert!(!info.sends_silence());
        assert!(LoadOptions::new().sends_silence());
        let loud = LoadOptions {
            caller_audio: Some(true),
            ..info
        };
        assert!(loud.sends_silence());
    }

    #[test]
    fn a_target_without_a_judge_checks_one_call_in_a_hundred() {
        assert_eq!(LoadOptions::new().check_interval(), 1);
        let target = LoadOptions {
            target: Some("sip:127.0.0.1:5060".into()),
            ..LoadOptions::new()
        };
        assert_eq!(target.check_interval(), 100);
        let judged = LoadOptions {
            invalid_ratio: 0.1,
            ..target.clone()
        };
        assert_eq!(judged.check_interval(), 1);
        let all = LoadOptions {
            check_every: Some(1),
            ..target
        };
        assert_eq!(all.check_interval(), 1);
        let skipping = LoadOptions {
            check_every: Some(10),
            reset_every: Some(Duration::from_secs(1)),
            ..LoadOptions::new()
        };
        assert_eq!(skipping.validate(), Err(OptionsError::CheckEvery(10)));
    }

    #[test]
    fn mix_cycles_through_the_three_methods() {
        let methods: Vec<_> = (0..3).map(|p| DtmfChoice::Mix.method(p)).collect();
        assert_eq!(
            methods,
            [DtmfMethod::Rfc4733, DtmfMethod::Info, DtmfMethod::Inband]
        );
        assert_eq!(DtmfChoice::Info.method(2), DtmfMethod::Info);
    }
}
