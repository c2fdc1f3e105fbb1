"""polysim: a Polymarket venue on loopback that speaks the real wire formats. Never imports the copier."""
