//! The caller flow as a pure state machine: greeting, digit collection,
//! lookup, retries. No IO and no clock: time is passed in.
