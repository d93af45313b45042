"""PURE byte tools shared by every codec: a cursor buffer and the Internet checksum."""
