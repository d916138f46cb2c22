//! The SDP subset (RFC 4566; offer/answer, RFC 3264) for PCMU, PCMA and telephone-event.
//!
//! What it does:
//! - [`SessionDescription::parse`] reads the lines the bridge needs (`v`, `o`,
//!   `s`, `c` at session or media level, `t`, `m`, and the attributes
//!   `rtpmap`, `fmtp`, `ptime` and the direction ones), accepts LF or CRLF,
//!   and skips every other line. Errors name the bad line.
//! - [`answer`] answers a caller's offer: the first of the caller's formats
//!   that is G.711 (PCMU or PCMA at 8000 Hz), plus telephone-event/8000 if
//!   offered, always under the caller's payload type numbers, and rejects
//!   every other stream with port 0 (RFC 3264 §6).
//! - [`offer`] and [`accept_answer`] cover the other direction: the offer in
//!   the 200 to an INVITE without SDP (answer in the ACK, RFC 3261 §13.2.1),
//!   and the caller side.
//!
//! What it does not: ICE, SRTP (RTP/SAVP streams are rejected), RTCP
//! attributes, bandwidth, video, re-INVITE session versioning (the caller
//! passes the `o=` id and version), or resolving host names in `c=`: only
//! literal addresses are accepted.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// `o=` username and `s=` name in the SDP the bridge sends.
const LOCAL_NAME: &str = "dialin";

/// The dynamic payload type the bridge offers telephone-event under.
pub const OFFERED_EVENT_PT: u8 = 101;

/// The events the bridge offers: DTMF 0-15 and flash (16) (RFC 4733 §3.2).
const OFFERED_EVENTS: &str = "0-16";

/// Packet time the bridge sends at and asks for (RFC 3551 §4.2 default).
const PTIME_MS: u32 = 20;

/// Why an SDP body could not be used. Each error knows the SIP response it
/// produces when it comes from an offer in an INVITE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("sdp line {line} `{text}`: expected {expected}")]
    Malformed {
        line: usize,
        text: String,
        expected: &'static str,
    },

    #[error("sdp has no `{what}` line; expected one (RFC 4566 §5)")]
    Missing { what: &'static str },

    #[error(
        "sdp stream {index} has no connection address; expected `c=` at session or media level"
    )]
    NoConnection { index: usize },

    #[error(
        "sdp has no active audio stream over RTP/AVP (streams: {found}); expected an \
         `m=audio` line with a non-zero port"
    )]
    NoAudio { found: String },

    #[error(
        "sdp audio offers no acceptable codec (payload types: {offered}); expected PCMU \
         (0 or rtpmap PCMU/8000) or PCMA (8 or rtpmap PCMA/8000)"
    )]
    NoCommonCodec { offered: String },

    #[error(
        "sdp answer has {answered} media streams for the {offered} offered; expected the same \
         number (RFC 3264 §6)"
    )]
    StreamCountMismatch { offered: usize, answered: usize },
}

impl SdpError {
    /// The SIP response to an INVITE whose offer failed this way: 400 when
    /// the body is not usable SDP, 488 Not Acceptable Here when it is but
    /// offers nothing the bridge can do (RFC 3261 §21.4.26).
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Malformed { .. }
            | SdpError::Missing { .. }
            | SdpError::NoConnection { .. }
            | SdpError::StreamCountMismatch { .. } => 400,
            SdpError::NoAudio { .. } | SdpError::NoCommonCodec { .. } => 488,
        }
    }
}

/// The media direction attributes (RFC 4566 §6, RFC 3264 §5.1), from the
/// point of view of the side whose SDP carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The same stream seen from the other side. This is also the answer to
    /// an offered direction (RFC 3264 §6.1: sendonly is answered recvonly,
    /// recvonly sendonly, and sendrecv and inactive as themselves).
    pub fn reversed(self) -> Self {
        Direction::from_flags(self.receives(), self.sends())
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The attribute name (`sendrecv`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Self> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The audio codecs the bridge speaks: G.711 at 8000 Hz, mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The static payload type (RFC 3551 §6, table 4).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    fn from_rtpmap(map: &RtpMap) -> Option<Self> {
        // RFC 4566 §6: encoding names are case-insensitive. One channel is
        // the default when the channel count is left out.
        if map.clock_rate != 8000 || map.channels.is_some_and(|c| c != 1) {
            return None;
        }
        if map.encoding.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if map.encoding.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

/// The `o=` line (RFC 4566 §5.2). Ids are kept as text: some senders use
/// more digits than a u64 holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub session_version: String,
    pub address: String,
}

/// An `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, ...
    pub media: String,
    /// 0 means the stream is rejected or disabled (RFC 3264 §5.1).
    pub port: u16,
    pub protocol: String,
    /// The formats as written; for RTP profiles, payload type numbers.
    pub formats: Vec<String>,
    /// The media-level `c=` address, overriding the session-level one.
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<(u8, String)>,
    pub ptime: Option<u32>,
    pub direction: Option<Direction>,
}

impl MediaDescription {
    fn new(media: String, port: u16, protocol: String, formats: Vec<String>) -> Self {
        MediaDescription {
            media,
            port,
            protocol,
            formats,
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: None,
            direction: None,
        }
    }

    /// An audio stream over plain RTP (RFC 3551), the only kind the bridge takes.
    pub fn is_rtp_avp_audio(&self) -> bool {
        self.media == "audio" && self.protocol.eq_ignore_ascii_case("RTP/AVP")
    }

    fn is_rtp(&self) -> bool {
        self.protocol
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("RTP/"))
    }

    /// The payload types of an RTP stream in the offerer's order of
    /// preference (RFC 3264 §5.1). Empty for other protocols.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        let rtp = self.is_rtp();
        self.formats
            .iter()
            .filter(move |_| rtp)
            .filter_map(|f| parse_payload_type(f))
    }

    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == payload_type)
    }

    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, p)| p.as_str())
    }

    /// The codec a payload type of this stream stands for, if it is G.711.
    /// An `a=rtpmap` decides; without one, the static table (RFC 3551 §6).
    pub fn codec(&self, payload_type: u8) -> Option<Codec> {
        match self.rtpmap(payload_type) {
            Some(map) => Codec::from_rtpmap(map),
            None => match payload_type {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            },
        }
    }

    /// The first listed payload type mapped to telephone-event/8000 (RFC
    /// 4733 §7.1.1). Events at other rates go with other codecs (baresip
    /// offers one at 48000 for opus) and are no use with G.711.
    pub fn telephone_event(&self) -> Option<u8> {
        self.payload_types().find(|pt| {
            self.rtpmap(*pt).is_some_and(|m| {
                m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate == 8000
            })
        })
    }

    /// The first G.711 payload type in the stream's order, with its codec.
    fn first_g711(&self) -> Option<(Codec, u8)> {
        self.payload_types()
            .find_map(|pt| self.codec(pt).map(|c| (c, pt)))
    }
}

/// A parsed SDP body (RFC 4566), reduced to what offer/answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    /// The session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// The session-level direction attribute.
    pub direction: Option<Direction>,
    pub media: Vec<MediaDescription>,
}

/// Longest piece of a bad line quoted in an error.
const EXCERPT_CHARS: usize = 80;

fn malformed(line: usize, text: &str, expected: &'static str) -> SdpError {
    let text = match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    };
    SdpError::Malformed {
        line,
        text,
        expected,
    }
}

impl SessionDescription {
    /// Parses an SDP body. Lines may end in CRLF or LF; lines the bridge has
    /// no use for (`b=`, `i=`, `k=`, unknown attributes, ...) are skipped.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut direction = None;
        let mut media: Vec<MediaDescription> = Vec::new();
        let mut seen_version = false;

        for (index, raw) in text.split('\n').enumerate() {
            let number = index + 1;
            // RFC 4566 §5 says CRLF, but LF alone is common: accept both,
            // and tolerate trailing blanks some stacks leave.
            let line = raw.trim_end();
            if line.is_empty() {
                continue;
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(malformed(number, line, "a `<letter>=<value>` line"));
            }
            // Both leading bytes are ASCII, so index 2 is a char boundary.
            let kind = bytes[0];
            let value = &line[2..];
            if !seen_version {
                if kind != b'v' || value.trim() != "0" {
                    return Err(malformed(number, line, "`v=0` as the first line"));
                }
                seen_version = true;
                continue;
            }
            match kind {
                // o= and s= belong to the session; stray ones after m= are skipped.
                b'o' if media.is_empty() => origin = Some(parse_origin(number, line, value)?),
                b's' if media.is_empty() => session_name = Some(value.to_owned()),
                b'c' => {
                    let address = parse_connection(number, line, value)?;
                    match media.last_mut() {
                        Some(m) => m.connection = Some(address),
                        None => connection = Some(address),
                    }
                }
                b'm' => media.push(parse_media(number, line, value)?),
                b'a' => {
                    let (name, arg) = match value.split_once(':') {
                        Some((n, a)) => (n, Some(a)),
                        None => (value, None),
                    };
                    if let Some(d) = Direction::from_attribute(name) {
                        match media.last_mut() {
                            Some(m) => m.direction = Some(d),
                            None => direction = Some(d),
                        }
                        continue;
                    }
                    // rtpmap, fmtp and ptime only mean something per RTP stream.
                    let (Some(m), Some(arg)) = (media.last_mut(), arg) else {
                        continue;
                    };
                    if !m.is_rtp() {
                        continue;
                    }
                    match name {
                        "rtpmap" => m.rtpmaps.push(parse_rtpmap(number, line, arg)?),
                        "fmtp" => m.fmtps.push(parse_fmtp(number, line, arg)?),
                        // RFC 4566 §6: ptime is a hint; an unreadable one
                        // is not worth failing a call over.
                        "ptime" => m.ptime = arg.trim().parse().ok(),
                        _ => {}
                    }
                }
                // v again, t, b, i, u, e, p, z, k, r and any future letters.
                _ => {}
            }
        }
        if !seen_version {
            return Err(SdpError::Missing { what: "v=" });
        }
        let origin = origin.ok_or(SdpError::Missing { what: "o=" })?;
        Ok(SessionDescription {
            origin,
            // Some stacks leave out s= and t=; nothing here depends on them.
            session_name: session_name.unwrap_or_default(),
            connection,
            direction,
            media,
        })
    }

    /// Where a stream's media goes: its own `c=`, else the session's.
    pub fn connection_of(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// A stream's direction: its own attribute, else the session's, else
    /// sendrecv (RFC 3264 §5.1).
    pub fn direction_of(&self, media: &MediaDescription) -> Direction {
        media.direction.or(self.direction).unwrap_or_default()
    }

    /// A short list of the streams for error messages: `audio 0 RTP/AVP, video 9 RTP/AVP`.
    fn describe_streams(&self) -> String {
        if self.media.is_empty() {
            return "none".to_owned();
        }
        let mut out = String::new();
        for (i, m) in self.media.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{} {} {}", m.media, m.port, m.protocol);
        }
        out
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse(s)
    }
}

fn parse_origin(number: usize, line: &str, value: &str) -> Result<Origin, SdpError> {
    let f: Vec<&str> = value.split_whitespace().collect();
    let [username, id, version, "IN", _addrtype, address] = f.as_slice() else {
        return Err(malformed(
            number,
            line,
            "`o=<username> <session id> <version> IN <IP4|IP6> <address>`",
        ));
    };
    Ok(Origin {
        username: (*username).to_owned(),
        session_id: (*id).to_owned(),
        session_version: (*version).to_owned(),
        address: (*address).to_owned(),
    })
}

fn parse_connection(number: usize, line: &str, value: &str) -> Result<IpAddr, SdpError> {
    const EXPECTED: &str = "`c=IN IP4 <address>` or `c=IN IP6 <address>` with a literal address";
    let f: Vec<&str> = value.split_whitespace().collect();
    let [nettype, addrtype, address] = f.as_slice() else {
        return Err(malformed(number, line, EXPECTED));
    };
    if *nettype != "IN" {
        return Err(malformed(number, line, EXPECTED));
    }
    // RFC 4566 §5.7: multicast addresses carry /ttl and /count suffixes.
    let address = address.split('/').next().unwrap_or(address);
    let parsed = match *addrtype {
        "IP4" => address.parse::<std::net::Ipv4Addr>().map(IpAddr::V4).ok(),
        "IP6" => address.parse::<std::net::Ipv6Addr>().map(IpAddr::V6).ok(),
        _ => None,
    };
    parsed.ok_or_else(|| malformed(number, line, EXPECTED))
}

fn parse_media(number: usize, line: &str, value: &str) -> Result<MediaDescription, SdpError> {
    const EXPECTED: &str = "`m=<media> <port> <protocol> <format> ...` with a port of 0 to 65535";
    let mut f = value.split_whitespace();
    let (Some(media), Some(port), Some(protocol)) = (f.next(), f.next(), f.next()) else {
        return Err(malformed(number, line, EXPECTED));
    };
    // RFC 4566 §5.14: `<port>/<number of ports>` for layered encodings.
    let port = port.split('/').next().unwrap_or(port);
    let port: u16 = port
        .parse()
        .map_err(|_| malformed(number, line, EXPECTED))?;
    let formats: Vec<String> = f.map(str::to_owned).collect();
    if formats.is_empty() {
        return Err(malformed(
            number,
            line,
            "at least one format on the m= line",
        ));
    }
    let m = MediaDescription::new(media.to_owned(), port, protocol.to_owned(), formats);
    // RTP formats are payload type numbers (RFC 4566 §5.14, RFC 3550 §5.1).
    if m.is_rtp() && m.formats.iter().any(|f| parse_payload_type(f).is_none()) {
        return Err(malformed(
            number,
            line,
            "rtp payload type numbers from 0 to 127 as formats",
        ));
    }
    Ok(m)
}

fn parse_payload_type(text: &str) -> Option<u8> {
    text.parse::<u8>().ok().filter(|pt| *pt <= 127)
}

fn parse_rtpmap(number: usize, line: &str, arg: &str) -> Result<RtpMap, SdpError> {
    const EXPECTED: &str = "`a=rtpmap:<payload type> <encoding>/<clock rate>[/<channels>]`";
    let bad = || malformed(number, line, EXPECTED);
    let (pt, rest) = arg.trim().split_once(char::is_whitespace).ok_or_else(bad)?;
    let payload_type = parse_payload_type(pt).ok_or_else(bad)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty()).ok_or_else(bad)?;
    let clock_rate = parts.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse().map_err(|_| bad())?),
        None => None,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(RtpMap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

fn parse_fmtp(number: usize, line: &str, arg: &str) -> Result<(u8, String), SdpError> {
    let arg = arg.trim();
    let (pt, params) = arg.split_once(char::is_whitespace).unwrap_or((arg, ""));
    let pt = parse_payload_type(pt).ok_or_else(|| {
        malformed(
            number,
            line,
            "`a=fmtp:<payload type> <parameters>` with a payload type from 0 to 127",
        )
    })?;
    Ok((pt, params.trim().to_owned()))
}

/// What the bridge puts in its own SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address RTP is received on (`c=` and `o=`).
    pub address: IpAddr,
    /// The call's RTP port (one per call).
    pub rtp_port: u16,
    /// `o=` session id (RFC 4566 §5.2): fixed for the dialog.
    pub session_id: u64,
    /// `o=` version: bumped by the caller whenever its SDP changes.
    pub session_version: u64,
}

/// The outcome of an offer/answer exchange: what to send where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// The payload type audio packets carry.
    pub audio_pt: u8,
    /// The payload type of RFC 4733 events, if both sides do them; without
    /// it DTMF arrives in-band or by SIP INFO.
    pub event_pt: Option<u8>,
    /// Where to send RTP: the peer's `c=` address and `m=` port. The
    /// address is 0.0.0.0 when a legacy peer holds the call (RFC 3264 §8.4).
    pub remote_rtp: SocketAddr,
    /// The bridge's direction on this stream.
    pub direction: Direction,
    /// The packet time the peer asked to receive, if it said.
    pub remote_ptime: Option<u32>,
}

/// The bridge's answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub negotiated: Negotiated,
    /// The SDP body to send, CRLF line endings.
    pub sdp: String,
}

fn address_type(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// `v=` to `t=`: the session part of every SDP the bridge sends.
fn write_session(out: &mut String, local: &LocalMedia) {
    let at = address_type(local.address);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "v=0\r\no={LOCAL_NAME} {} {} IN {at} {}\r\ns={LOCAL_NAME}\r\nc=IN {at} {}\r\nt=0 0\r\n",
        local.session_id, local.session_version, local.address, local.address
    );
}

/// Answers an offer (RFC 3264 §6): the first active RTP/AVP audio stream
/// with a G.711 format gets the first G.711 format in the caller's order and
/// telephone-event/8000 if offered, with the caller's payload type numbers;
/// every other stream is rejected with port 0.
pub fn answer(offer: &SessionDescription, local: &LocalMedia) -> Result<Answer, SdpError> {
    let mut chosen: Option<(usize, Negotiated)> = None;
    let mut offered_audio: Option<String> = None;
    for (index, m) in offer.media.iter().enumerate() {
        if m.port == 0 || !m.is_rtp_avp_audio() {
            continue;
        }
        let Some((codec, audio_pt)) = m.first_g711() else {
            offered_audio.get_or_insert_with(|| m.formats.join(" "));
            continue;
        };
        let address = offer
            .connection_of(m)
            .ok_or(SdpError::NoConnection { index })?;
        let negotiated = Negotiated {
            codec,
            audio_pt,
            event_pt: m.telephone_event(),
            remote_rtp: SocketAddr::new(address, m.port),
            direction: offer.direction_of(m).reversed(),
            remote_ptime: m.ptime,
        };
        chosen = Some((index, negotiated));
        break;
    }
    let Some((chosen_index, negotiated)) = chosen else {
        return Err(match offered_audio {
            Some(offered) => SdpError::NoCommonCodec { offered },
            None => SdpError::NoAudio {
                found: offer.describe_streams(),
            },
        });
    };

    let mut sdp = String::with_capacity(512);
    write_session(&mut sdp, local);
    for (index, m) in offer.media.iter().enumerate() {
        if index != chosen_index {
            // RFC 3264 §6: one m= line per offered stream, in order; port 0
            // rejects it. The formats are repeated because m= needs one.
            let _ = write!(
                sdp,
                "m={} 0 {} {}\r\n",
                m.media,
                m.protocol,
                m.formats.join(" ")
            );
            continue;
        }
        let n = &negotiated;
        let _ = write!(sdp, "m=audio {} RTP/AVP {}", local.rtp_port, n.audio_pt);
        if let Some(ev) = n.event_pt {
            let _ = write!(sdp, " {ev}");
        }
        let _ = write!(
            sdp,
            "\r\na=rtpmap:{} {}/8000\r\n",
            n.audio_pt,
            n.codec.encoding_name()
        );
        if let Some(ev) = n.event_pt {
            let _ = write!(sdp, "a=rtpmap:{ev} telephone-event/8000\r\n");
            // RFC 4733 §7.1.1: echo the events the caller listed; without
            // an fmtp both sides assume 0-15.
            if let Some(events) = m.fmtp(ev).filter(|e| !e.is_empty()) {
                let _ = write!(sdp, "a=fmtp:{ev} {events}\r\n");
            }
        }
        let _ = write!(sdp, "a=ptime:{PTIME_MS}\r\na={}\r\n", n.direction);
    }
    Ok(Answer { negotiated, sdp })
}

/// The bridge's offer: PCMU, PCMA and telephone-event/8000 as 101, 20 ms
/// packets, sendrecv. Sent in the 200 to an INVITE without SDP (delayed
/// offer) and by the caller side.
pub fn offer(local: &LocalMedia) -> String {
    let mut sdp = String::with_capacity(320);
    write_session(&mut sdp, local);
    let ev = OFFERED_EVENT_PT;
    let _ = write!(
        sdp,
        "m=audio {} RTP/AVP 0 8 {ev}\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:{ev} telephone-event/8000\r\n\
         a=fmtp:{ev} {OFFERED_EVENTS}\r\n\
         a=ptime:{PTIME_MS}\r\n\
         a=sendrecv\r\n",
        local.rtp_port
    );
    sdp
}

/// Reads the answer to an offer the bridge sent (in the ACK after a delayed
/// offer, or in a 200 on the caller side) and says what was agreed.
///
/// The answer's stream at the index of our first active audio stream is
/// used; the codec is the first of the answer's formats that is G.711 and
/// was offered, sent under the answer's payload type numbers.
pub fn accept_answer(offer_we_sent: &str, answer_text: &str) -> Result<Negotiated, SdpError> {
    let ours = SessionDescription::parse(offer_we_sent)?;
    let theirs = SessionDescription::parse(answer_text)?;
    // RFC 3264 §6: the answer has exactly as many m= lines as the offer.
    if ours.media.len() != theirs.media.len() {
        return Err(SdpError::StreamCountMismatch {
            offered: ours.media.len(),
            answered: theirs.media.len(),
        });
    }
    let no_audio = || SdpError::NoAudio {
        found: theirs.describe_streams(),
    };
    let index = ours
        .media
        .iter()
        .position(|m| m.port != 0 && m.is_rtp_avp_audio())
        .ok_or_else(no_audio)?;
    let offered = &ours.media[index];
    let answered = &theirs.media[index];
    // RFC 3264 §6: port 0 in the answer rejects the stream.
    if answered.port == 0 || !answered.is_rtp_avp_audio() {
        return Err(no_audio());
    }
    let offered_codecs: Vec<Codec> = offered
        .payload_types()
        .filter_map(|pt| offered.codec(pt))
        .collect();
    let (codec, audio_pt) = answered
        .payload_types()
        .find_map(|pt| {
            answered
                .codec(pt)
                .filter(|c| offered_codecs.contains(c))
                .map(|c| (c, pt))
        })
        .ok_or_else(|| SdpError::NoCommonCodec {
            offered: answered.formats.join(" "),
        })?;
    let event_pt = if offered.telephone_event().is_some() {
        answered.telephone_event()
    } else {
        None
    };
    let address = theirs
        .connection_of(answered)
        .ok_or(SdpError::NoConnection { index })?;
    // Their direction reversed is what they allow us; our offer bounds it.
    let allowed = theirs.direction_of(answered).reversed();
    let wanted = ours.direction_of(offered);
    let direction = Direction::from_flags(
        allowed.sends() && wanted.sends(),
        allowed.receives() && wanted.receives(),
    );
    Ok(Negotiated {
        codec,
        audio_pt,
        event_pt,
        remote_rtp: SocketAddr::new(address, answered.port),
        direction,
        remote_ptime: answered.ptime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn local() -> LocalMedia {
        LocalMedia {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            rtp_port: 40000,
            session_id: 4242,
            session_version: 7,
        }
    }

    fn answer_text(text: &str) -> Result<Answer, SdpError> {
        answer(&SessionDescription::parse(text)?, &local())
    }

    /// The media lines of an SDP body, without the session part.
    fn media_part(sdp: &str) -> &str {
        &sdp[sdp.find("m=").unwrap()..]
    }

    /// SIPp's uac_pcap scenario ([media_ip] etc. filled in).
    const SIPP_UAC_PCAP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.168.1.20\r\n\
s=-\r\n\
c=IN IP4 192.168.1.20\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 8 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-11,16\r\n";

    /// SIPp's built-in uac scenario: PCMU only, no events.
    const SIPP_UAC: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

    /// baresip with its default codec set: opus first, events at two rates.
    const BARESIP: &str = "v=0\r\n\
o=- 2890844526 2890844526 IN IP4 192.168.1.50\r\n\
s=-\r\n\
c=IN IP4 192.168.1.50\r\n\
t=0 0\r\n\
m=audio 10006 RTP/AVP 111 9 0 8 101 102\r\n\
b=AS:128\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/48000\r\n\
a=fmtp:101 0-15\r\n\
a=rtpmap:102 telephone-event/8000\r\n\
a=fmtp:102 0-15\r\n\
a=rtcp-rsize\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=label:1\r\n";

    /// Linphone: static G.711 without rtpmap, events at three rates, video.
    const LINPHONE: &str = "v=0\r\n\
o=alice 3342 2390 IN IP4 192.168.0.20\r\n\
s=Talk\r\n\
c=IN IP4 192.168.0.20\r\n\
t=0 0\r\n\
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
a=record:off\r\n\
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 useinbandfec=1\r\n\
a=rtpmap:97 SILK/16000\r\n\
a=rtpmap:98 speex/16000\r\n\
a=fmtp:98 vbr=on\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=yes\r\n\
a=rtpmap:101 telephone-event/48000\r\n\
a=rtpmap:99 telephone-event/16000\r\n\
a=rtpmap:100 telephone-event/8000\r\n\
a=rtcp-fb:* trr-int 1000\r\n\
a=rtcp-fb:* ccm tmmbr\r\n\
m=video 9078 RTP/AVP 96 97\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 H264/90000\r\n\
a=fmtp:97 profile-level-id=42801F\r\n\
a=rtcp-fb:* nack pli\r\n";

    /// SIPp play_dtmf style: events under 96.
    const SIPP_DTMF_96: &str = "v=0\n\
o=user1 1 1 IN IP4 127.0.0.1\n\
s=-\n\
c=IN IP4 127.0.0.1\n\
t=0 0\n\
m=audio 6002 RTP/AVP 0 96\n\
a=rtpmap:0 PCMU/8000\n\
a=rtpmap:96 telephone-event/8000\n\
a=fmtp:96 0-15\n";

    #[test]
    fn sipp_uac_pcap_offer_gets_pcma_and_its_event_fmtp() {
        let a = answer_text(SIPP_UAC_PCAP).unwrap();
        let n = &a.negotiated;
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.audio_pt, 8);
        assert_eq!(n.event_pt, Some(101));
        assert_eq!(n.remote_rtp, "192.168.1.20:6000".parse().unwrap());
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(
            media_part(&a.sdp),
            "m=audio 40000 RTP/AVP 8 101\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-11,16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
    }

    #[test]
    fn answer_session_part_carries_local_ids_and_address() {
        let a = answer_text(SIPP_UAC).unwrap();
        assert!(
            a.sdp.starts_with(
                "v=0\r\no=dialin 4242 7 IN IP4 10.0.0.1\r\ns=dialin\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
            ),
            "{}",
            a.sdp
        );
        // Our own parser reads it back.
        let back = SessionDescription::parse(&a.sdp).unwrap();
        assert_eq!(back.origin.session_id, "4242");
        assert_eq!(back.origin.session_version, "7");
        assert_eq!(back.media[0].port, 40000);
    }

    #[test]
    fn sipp_uac_offer_without_events_gets_pcmu_only() {
        let a = answer_text(SIPP_UAC).unwrap();
        assert_eq!(a.negotiated.codec, Codec::Pcmu);
        assert_eq!(a.negotiated.event_pt, None);
        assert!(a.sdp.contains("m=audio 40000 RTP/AVP 0\r\n"), "{}", a.sdp);
        assert!(!a.sdp.contains("telephone-event"));
    }

    #[test]
    fn baresip_offer_gets_first_g711_and_the_8000_hz_event() {
        let a = answer_text(BARESIP).unwrap();
        let n = &a.negotiated;
        assert_eq!(
            (n.codec, n.audio_pt, n.event_pt),
            (Codec::Pcmu, 0, Some(102))
        );
        assert_eq!(n.remote_ptime, Some(20));
        assert!(
            a.sdp.contains("m=audio 40000 RTP/AVP 0 102\r\n"),
            "{}",
            a.sdp
        );
        assert!(
            a.sdp
                .contains("a=rtpmap:102 telephone-event/8000\r\na=fmtp:102 0-15\r\n")
        );
        assert!(!a.sdp.contains("opus") && !a.sdp.contains("G722"));
        assert!(!a.sdp.contains(" 101"));
    }

    #[test]
    fn linphone_offer_gets_static_pcmu_and_video_rejected() {
        let a = answer_text(LINPHONE).unwrap();
        let n = &a.negotiated;
        assert_eq!(
            (n.codec, n.audio_pt, n.event_pt),
            (Codec::Pcmu, 0, Some(100))
        );
        assert_eq!(n.remote_rtp, "192.168.0.20:7078".parse().unwrap());
        let back = SessionDescription::parse(&a.sdp).unwrap();
        assert_eq!(back.media.len(), 2);
        assert!(a.sdp.ends_with("m=video 0 RTP/AVP 96 97\r\n"), "{}", a.sdp);
    }

    #[test]
    fn g729_only_offer_is_refused_with_488() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n\
                     m=audio 5004 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\n\
                     a=rtpmap:101 telephone-event/8000\r\n";
        let err = answer_text(offer).unwrap_err();
        assert_eq!(
            err,
            SdpError::NoCommonCodec {
                offered: "18 101".into()
            }
        );
        assert_eq!(err.status_code(), 488);
        assert!(err.to_string().contains("18 101"), "{err}");
    }

    #[test]
    fn pcma_only_offer_gets_pcma() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=audio 5004 RTP/AVP 8\n";
        let a = answer_text(offer).unwrap();
        assert_eq!(
            (a.negotiated.codec, a.negotiated.audio_pt),
            (Codec::Pcma, 8)
        );
    }

    #[test]
    fn dynamic_payload_type_for_pcmu_is_kept() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=audio 5004 RTP/AVP 98 99\na=rtpmap:98 pcmu/8000/1\n\
                     a=rtpmap:99 Telephone-Event/8000\n";
        let a = answer_text(offer).unwrap();
        assert_eq!(
            (
                a.negotiated.codec,
                a.negotiated.audio_pt,
                a.negotiated.event_pt
            ),
            (Codec::Pcmu, 98, Some(99))
        );
        assert!(a.sdp.contains("a=rtpmap:98 PCMU/8000\r\n"));
    }

    #[test]
    fn rtpmap_at_other_rate_or_stereo_is_not_g711() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=audio 5004 RTP/AVP 97 98 8\na=rtpmap:97 PCMU/16000\n\
                     a=rtpmap:98 PCMU/8000/2\n";
        let a = answer_text(offer).unwrap();
        assert_eq!(a.negotiated.audio_pt, 8);
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=audio 5004 RTP/AVP 0\nc=IN IP4 172.16.0.9\n";
        let a = answer_text(offer).unwrap();
        assert_eq!(a.negotiated.remote_rtp, "172.16.0.9:5004".parse().unwrap());
        // Only a media-level c=: fine too.
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nt=0 0\n\
                     m=audio 5004 RTP/AVP 0\nc=IN IP4 172.16.0.9\n";
        assert_eq!(
            answer_text(offer).unwrap().negotiated.remote_rtp,
            "172.16.0.9:5004".parse().unwrap()
        );
    }

    #[test]
    fn missing_connection_is_400() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nt=0 0\nm=audio 5004 RTP/AVP 0\n";
        let err = answer_text(offer).unwrap_err();
        assert_eq!(err, SdpError::NoConnection { index: 0 });
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn ipv6_connection_is_parsed_and_answered_from_ipv4() {
        let offer = "v=0\no=- 1 1 IN IP6 2001:db8::1\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\n\
                     m=audio 5004 RTP/AVP 0\n";
        let a = answer_text(offer).unwrap();
        assert_eq!(
            a.negotiated.remote_rtp,
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                5004
            )
        );
        assert!(a.sdp.contains("c=IN IP4 10.0.0.1\r\n"));
    }

    #[test]
    fn multicast_ttl_suffix_is_stripped() {
        let sdp = SessionDescription::parse(
            "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 224.2.1.1/127/3\nt=0 0\n",
        )
        .unwrap();
        assert_eq!(
            sdp.connection,
            Some(IpAddr::V4(Ipv4Addr::new(224, 2, 1, 1)))
        );
    }

    #[test]
    fn port_zero_streams_are_skipped_and_answered_with_port_zero() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=audio 0 RTP/AVP 0\n\
                     m=audio 5006 RTP/AVP 8\n";
        let a = answer_text(offer).unwrap();
        assert_eq!(a.negotiated.remote_rtp.port(), 5006);
        assert_eq!(a.negotiated.codec, Codec::Pcma);
        assert_eq!(
            media_part(&a.sdp),
            "m=audio 0 RTP/AVP 0\r\n\
             m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // Only rejected audio: nothing to answer with.
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=audio 0 RTP/AVP 0\nm=video 9 RTP/AVP 96\n";
        let err = answer_text(offer).unwrap_err();
        assert_eq!(err.status_code(), 488);
        assert!(
            err.to_string().contains("audio 0 RTP/AVP, video 9 RTP/AVP"),
            "{err}"
        );
    }

    #[test]
    fn srtp_only_audio_is_refused_with_488() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=audio 5004 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\n";
        let err = answer_text(offer).unwrap_err();
        assert!(matches!(err, SdpError::NoAudio { .. }), "{err:?}");
        assert_eq!(err.status_code(), 488);
    }

    #[test]
    fn sipp_play_dtmf_event_96_is_kept() {
        let a = answer_text(SIPP_DTMF_96).unwrap();
        assert_eq!(a.negotiated.event_pt, Some(96));
        assert!(a.sdp.contains("m=audio 40000 RTP/AVP 0 96\r\n"));
        assert!(a.sdp.contains("a=fmtp:96 0-15\r\n"));
    }

    #[test]
    fn crlf_and_lf_parse_the_same() {
        let lf = SIPP_UAC_PCAP.replace("\r\n", "\n");
        assert_eq!(
            SessionDescription::parse(SIPP_UAC_PCAP).unwrap(),
            SessionDescription::parse(&lf).unwrap()
        );
        let crlf = SIPP_DTMF_96.replace('\n', "\r\n");
        assert_eq!(
            SessionDescription::parse(SIPP_DTMF_96).unwrap(),
            SessionDescription::parse(&crlf).unwrap()
        );
    }

    #[test]
    fn parse_reads_fields_and_skips_unknown_lines() {
        let sdp = SessionDescription::parse(BARESIP).unwrap();
        assert_eq!(sdp.origin.username, "-");
        assert_eq!(sdp.origin.session_id, "2890844526");
        assert_eq!(sdp.origin.address, "192.168.1.50");
        assert_eq!(sdp.session_name, "-");
        let m = &sdp.media[0];
        assert_eq!(
            m.payload_types().collect::<Vec<_>>(),
            vec![111, 9, 0, 8, 101, 102]
        );
        assert_eq!(
            m.rtpmap(111),
            Some(&RtpMap {
                payload_type: 111,
                encoding: "opus".into(),
                clock_rate: 48000,
                channels: Some(2)
            })
        );
        assert_eq!(m.fmtp(111), Some("stereo=1;sprop-stereo=1"));
        assert_eq!(m.direction, Some(Direction::SendRecv));
        assert_eq!(m.rtpmaps.len(), 6);
    }

    #[test]
    fn direction_is_answered_per_rfc3264() {
        for (offered, answered) in [
            ("sendrecv", Direction::SendRecv),
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
        ] {
            // At media level.
            let offer = format!(
                "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                 m=audio 5004 RTP/AVP 0\na={offered}\n"
            );
            let a = answer_text(&offer).unwrap();
            assert_eq!(a.negotiated.direction, answered, "{offered}");
            assert!(a.sdp.ends_with(&format!("a={answered}\r\n")), "{}", a.sdp);
            // At session level.
            let offer = format!(
                "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\na={offered}\n\
                 m=audio 5004 RTP/AVP 0\n"
            );
            assert_eq!(answer_text(&offer).unwrap().negotiated.direction, answered);
        }
        // Media level wins over session level.
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\na=sendonly\n\
                     m=audio 5004 RTP/AVP 0\na=sendrecv\n";
        assert_eq!(
            answer_text(offer).unwrap().negotiated.direction,
            Direction::SendRecv
        );
    }

    #[test]
    fn malformed_lines_are_400_and_named() {
        let cases = [
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nm=audio abc RTP/AVP 0\n",
                3,
                "m=audio abc",
            ),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nm=audio 70000 RTP/AVP 0\n",
                3,
                "70000",
            ),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nm=audio 5004 RTP/AVP\n",
                3,
                "RTP/AVP",
            ),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nm=audio 5004 RTP/AVP 0 pcmu\n",
                3,
                "pcmu",
            ),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nm=audio 5004 RTP/AVP 200\n",
                3,
                "200",
            ),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nc=IN IP4 example.com\n",
                3,
                "example.com",
            ),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nc=IN IP4 2001:db8::1\n",
                3,
                "2001:db8::1",
            ),
            ("v=0\no=- 1 1 IN IP4 10.1.1.1\nc=ATM NSAP x\n", 3, "ATM"),
            ("v=0\no=- 1 1\n", 2, "o=- 1 1"),
            ("v=1\n", 1, "v=1"),
            ("o=- 1 1 IN IP4 1.1.1.1\nv=0\n", 1, "o=-"),
            ("v=0\n\nthis is not sdp\n", 3, "this is not sdp"),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nm=audio 1 RTP/AVP 0\na=rtpmap:0 PCMU\n",
                4,
                "a=rtpmap:0 PCMU",
            ),
            (
                "v=0\no=- 1 1 IN IP4 10.1.1.1\nm=audio 1 RTP/AVP 0\na=fmtp:x 0-15\n",
                4,
                "a=fmtp:x",
            ),
        ];
        for (text, line, quoted) in cases {
            let err = SessionDescription::parse(text).unwrap_err();
            let SdpError::Malformed { line: l, .. } = &err else {
                panic!("{text:?}: expected Malformed, got {err:?}");
            };
            assert_eq!(*l, line, "{text:?}");
            let msg = err.to_string();
            assert!(msg.contains(quoted) && msg.contains("expected"), "{msg}");
            assert_eq!(err.status_code(), 400);
        }
    }

    #[test]
    fn missing_version_or_origin_is_400() {
        assert_eq!(
            SessionDescription::parse(""),
            Err(SdpError::Missing { what: "v=" })
        );
        let err = SessionDescription::parse("v=0\r\ns=-\r\n").unwrap_err();
        assert_eq!(err, SdpError::Missing { what: "o=" });
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn long_bad_line_is_cut_in_the_error() {
        let text = format!("v=0\nm={}\n", "é".repeat(500));
        let msg = SessionDescription::parse(&text).unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
        assert!(msg.contains("..."));
    }

    #[test]
    fn non_rtp_media_lines_are_kept_but_not_checked() {
        let offer = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\n\
                     m=application 5060 UDP/BFCP *\na=fmtp:* whatever\n\
                     m=audio 5004 RTP/AVP 0\n";
        let a = answer_text(offer).unwrap();
        assert!(
            a.sdp.contains("m=application 0 UDP/BFCP *\r\n"),
            "{}",
            a.sdp
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = StdRng::seed_from_u64(11);
        // Random bytes, as lossy text.
        for _ in 0..5_000 {
            let len = rng.random_range(0..300);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = answer_text(&text);
        }
        // SDP-shaped noise: real lines shuffled, cut and mutated.
        let alphabet: Vec<char> = "vosctmab=: /\r\n0123456789IP4AVTRudio-é".chars().collect();
        let lines: Vec<&str> = [SIPP_UAC_PCAP, BARESIP, LINPHONE]
            .iter()
            .flat_map(|s| s.lines())
            .collect();
        for _ in 0..5_000 {
            let mut text = String::from("v=0\n");
            for _ in 0..rng.random_range(0..12) {
                let mut line: Vec<char> = lines[rng.random_range(0..lines.len())].chars().collect();
                for _ in 0..rng.random_range(0..3) {
                    if !line.is_empty() {
                        let i = rng.random_range(0..line.len());
                        line[i] = alphabet[rng.random_range(0..alphabet.len())];
                    }
                }
                text.extend(line);
                text.push('\n');
            }
            let _ = answer_text(&text);
            let _ = accept_answer(&offer(&local()), &text);
        }
    }

    #[test]
    fn every_truncation_of_a_real_offer_parses_or_errors() {
        for (cut, _) in LINPHONE.char_indices() {
            let _ = answer_text(&LINPHONE[..cut]);
        }
        // Cut at a line end, the offer is still answerable once m= and its
        // codec are in.
        let cut = LINPHONE.find("a=rtpmap:96").unwrap();
        assert!(answer_text(&LINPHONE[..cut]).is_ok());
    }

    #[test]
    fn offer_lists_g711_and_events_at_20ms() {
        let text = offer(&local());
        assert_eq!(
            media_part(&text),
            "m=audio 40000 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        let sdp = SessionDescription::parse(&text).unwrap();
        assert_eq!(sdp.origin.session_id, "4242");
        assert_eq!(sdp.connection, Some(local().address));
    }

    #[test]
    fn delayed_offer_round_trip_between_two_bridges() {
        // The bridge offers in the 200; a peer answering with our own rules
        // picks PCMU and event 101; the ACK's answer is accepted.
        let ours = offer(&local());
        let peer = LocalMedia {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            rtp_port: 5004,
            session_id: 1,
            session_version: 1,
        };
        let reply = answer(&SessionDescription::parse(&ours).unwrap(), &peer).unwrap();
        assert_eq!(
            reply.negotiated.remote_rtp,
            "10.0.0.1:40000".parse().unwrap()
        );
        let n = accept_answer(&ours, &reply.sdp).unwrap();
        assert_eq!(
            n,
            Negotiated {
                codec: Codec::Pcmu,
                audio_pt: 0,
                event_pt: Some(101),
                remote_rtp: "10.0.0.2:5004".parse().unwrap(),
                direction: Direction::SendRecv,
                remote_ptime: Some(20),
            }
        );
    }

    #[test]
    fn accept_answer_takes_pcma_and_the_answers_event_number() {
        let ours = offer(&local());
        let theirs = "v=0\no=- 5 5 IN IP4 10.9.9.9\ns=-\nc=IN IP4 10.9.9.9\nt=0 0\n\
                      m=audio 7000 RTP/AVP 8 96\na=rtpmap:96 telephone-event/8000\n\
                      a=recvonly\n";
        let n = accept_answer(&ours, theirs).unwrap();
        assert_eq!(
            (n.codec, n.audio_pt, n.event_pt),
            (Codec::Pcma, 8, Some(96))
        );
        assert_eq!(n.direction, Direction::SendOnly);
        assert_eq!(n.remote_rtp, "10.9.9.9:7000".parse().unwrap());
    }

    #[test]
    fn accept_answer_refuses_rejected_or_unoffered() {
        let ours = offer(&local());
        let rejected = "v=0\no=- 5 5 IN IP4 10.9.9.9\ns=-\nc=IN IP4 10.9.9.9\nt=0 0\n\
                        m=audio 0 RTP/AVP 0\n";
        let err = accept_answer(&ours, rejected).unwrap_err();
        assert!(matches!(err, SdpError::NoAudio { .. }), "{err:?}");
        assert_eq!(err.status_code(), 488);

        let g729 = "v=0\no=- 5 5 IN IP4 10.9.9.9\ns=-\nc=IN IP4 10.9.9.9\nt=0 0\n\
                    m=audio 7000 RTP/AVP 18\n";
        let err = accept_answer(&ours, g729).unwrap_err();
        assert_eq!(
            err,
            SdpError::NoCommonCodec {
                offered: "18".into()
            }
        );

        let two = "v=0\no=- 5 5 IN IP4 10.9.9.9\ns=-\nc=IN IP4 10.9.9.9\nt=0 0\n\
                   m=audio 7000 RTP/AVP 0\nm=video 0 RTP/AVP 96\n";
        assert_eq!(
            accept_answer(&ours, two),
            Err(SdpError::StreamCountMismatch {
                offered: 1,
                answered: 2
            })
        );
        assert_eq!(
            accept_answer(&ours, "garbage").unwrap_err().status_code(),
            400
        );
    }

    #[test]
    fn accept_answer_drops_events_we_did_not_offer() {
        let ours = "v=0\no=dialin 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n\
                    m=audio 40000 RTP/AVP 0\n";
        let theirs = "v=0\no=- 5 5 IN IP4 10.9.9.9\ns=-\nc=IN IP4 10.9.9.9\nt=0 0\n\
                      m=audio 7000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n";
        assert_eq!(accept_answer(ours, theirs).unwrap().event_pt, None);
    }

    #[test]
    fn direction_reversal_table() {
        assert_eq!(Direction::SendRecv.reversed(), Direction::SendRecv);
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
    }
}
