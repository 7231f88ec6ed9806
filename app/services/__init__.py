"""Qt-free asyncio services, one per business capability; the CLI and the views both call them."""
