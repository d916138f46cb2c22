//! The SDP subset (RFC 4566; offer/answer, RFC 3264) for PCMU, PCMA and telephone-event.
