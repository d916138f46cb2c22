//! RFC 3261 §17.2 server transactions as state machines, timers as deadlines.
