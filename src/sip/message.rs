//! The project's SIP message module over rsip: parsing (with the repairs rsip needs) and building.
