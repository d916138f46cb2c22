//! RFC 4733 telephone-events: one key press per event, however real senders send it.
