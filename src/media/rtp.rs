//! RTP packets (RFC 3550): header parsing and building, without IO.
