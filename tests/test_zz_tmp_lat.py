import contextlib
from tests.test_nfc_tcp import *  # noqa

async def test_lat(client, world):
    listener = listener_of(client)
    await http_tap_seconds(client, world, 5)
    for i in range(3):
        a = await http_tap_seconds(client, world, 20)
        b = await http_tap_seconds(client, world, 20)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(50):
                await stack.enter_async_context(connected(listener.port, "lobby", world.readers["lobby"]))
            c = await http_tap_seconds(client, world, 20)
        print(f"idle {a*1000:.1f} idle {b*1000:.1f} loaded {c*1000:.1f}")
