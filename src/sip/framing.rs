//! Finding SIP messages in a TCP byte stream (RFC 3261 §18.3), by Content-Length.
