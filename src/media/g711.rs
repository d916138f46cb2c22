//! G.711 µ-law (PCMU) and A-law (PCMA) encoding and decoding (ITU-T G.711).
