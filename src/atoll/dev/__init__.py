"""Development harnesses: several pretend hosts on one machine."""
