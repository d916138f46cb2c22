//! In-band DTMF: a Goertzel detector over G.711 audio, and the tone generator callers use.
