"""PURE CARP: constants, codec (advert + HMAC), config, events/actions, state machine."""
