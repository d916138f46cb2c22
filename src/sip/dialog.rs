//! SIP dialogs (RFC 3261 §12): tags, route set, CSeq, without IO.
