//! DTMF in SIP INFO bodies: `application/dtmf-relay` and `application/dtmf`.
