"""balance.py's rule, sample by sample (the e2e test, tests/e2e/test_frontend_balance.py, runs
it against the kernel): the target is the first front-end not saturated, with hysteresis; it
moves on only while the machine has an idle core's share, back at once; every one saturated
is the kernel's hash; a front-end before the target sheds only while past HIGH."""
from __future__ import annotations

import socket
from types import SimpleNamespace

from sidecar.frontend import balance
from sidecar.frontend.balance import HIGH, IDLE_MIN, LOW, Balancer


class FakeConn:
    def __init__(self, busy: bool):
        self.busy = busy
        self.closing = False

    def close_after_response(self) -> bool:
        if not self.busy or self.closing:
            return False
        self.closing = True
        return True


def _balancer(n: int, conns=(), limit: int = 0) -> tuple[Balancer, list]:
    asked = []
    fe = SimpleNamespace(loop=None, connections=set(conns),
                         config=SimpleNamespace(limit_concurrency=limit),
                         frontends=SimpleNamespace(shed=lambda k, share: asked.append(k)))
    return Balancer(fe, [], n), asked


def test_target_moves_on_past_high_with_an_idle_core_back_below_low_and_hash_when_all_full():
    b, asked = _balancer(3)
    assert b.target == 0
    b.decide([HIGH - 0.01, 0.0, 0.0], 1.5)
    assert b.target == 0                      # not yet saturated
    b.decide([HIGH, 0.0, 0.0], IDLE_MIN - 0.01)
    assert b.target == 0 and b.saturated[0]   # saturated, but no idle core: stays
    b.decide([HIGH, 0.0, 0.0], IDLE_MIN)
    assert b.target == 1 and asked == []      # spills; front-end 0 sheds locally
    b.decide([LOW, 0.5, 0.0], 1.0)
    assert b.target == 1                      # hysteresis: between LOW and HIGH it stays
    b.decide([0.8, HIGH, 0.1], 1.0)
    assert b.target == 2 and asked == [1]     # front-end 1 past HIGH sheds too
    b.decide([0.8, 0.95, 0.95], 1.0)
    assert b.target is None                   # every one saturated: the kernel's hash
    asked.clear()
    b.decide([0.95, 0.95, 0.95], 1.0)
    assert asked == []                        # no shedding under the hash
    b.decide([0.95, LOW - 0.01, 0.95], 0.0)
    assert b.target == 1                      # back at once, idle core or not
    b.decide([LOW - 0.01, 0.5, 0.2], 0.0)
    assert b.target == 0
    assert b.moves == 5


def test_a_frontend_not_serving_is_never_the_target():
    b, _ = _balancer(3)
    b.decide([None, 0.1, 0.1], 0.0)           # (front-end 0 always serves; a child may not)
    assert b.target == 1                      # a dead target moves on without an idle core
    b.decide([0.1, None, 0.1], 0.0)
    assert b.target == 0


def test_a_frontend_near_its_limit_concurrency_is_saturated_idle_core_or_not():
    b, _ = _balancer(2, limit=8)
    assert b.full_at == 6
    b.decide([0.1, 0.0], 0.0, [True, False])
    assert b.target == 1                      # no idle core needed: it is about admission
    b.decide([0.1, 0.0], 0.0, [False, False])
    assert b.target == 0                      # below the mark and below LOW: back


def test_shedding_closes_a_share_of_the_busy_http1_connections_after_their_response():
    conns = [FakeConn(busy=i % 2 == 0) for i in range(32)]
    b, _ = _balancer(2, conns)
    b.decide([0.95, 0.0], 1.0)
    assert b.target == 1
    assert sum(c.closing for c in conns) == 4 == b.shed_total   # 1/8 of 32
    b.decide([0.85, 0.3], 1.0)
    assert b.shed_total == 4                  # under HIGH: sheds no more
    assert balance.shed([FakeConn(busy=False)], 0.5) == 0   # idle ones are left alone


def test_steer_sends_the_groups_connections_to_one_socket_and_back_to_the_hash():
    socks = []
    try:
        for _ in range(2):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
            s.listen(64)
            s.setblocking(False)
            socks.append(s)
        port = socks[0].getsockname()[1]

        def spread(n: int = 16) -> list[int]:
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
            got = [0, 0]
            for k, s in enumerate(socks):
                while True:
                    try:
                        s.accept()[0].close()
                    except BlockingIOError:
                        break
                    got[k] += 1
            for c in clients:
                c.close()
            return got

        balance.steer(socks[0], 1)
        assert spread() == [0, 16]
        balance.steer(socks[1], 0)            # any socket of the group sets its program
        assert spread() == [16, 0]
        balance.steer(socks[0], None)
        assert sum(spread(64)) == 64 and 0 not in spread(64)   # the hash: both
    finally:
        for s in socks:
            s.close()


def test_a_socket_that_cannot_be_steered_leaves_the_hash_with_one_warning(caplog):
    with socket.socket() as plain:   # not in a SO_REUSEPORT group: EINVAL
        plain.bind(("127.0.0.1", 0))
        plain.listen(1)
        fe = SimpleNamespace(loop=None, connections=set(),
                             config=SimpleNamespace(limit_concurrency=0))
        with caplog.at_level("WARNING", logger="sidecar.frontend"):
            b = Balancer(fe, [plain], 2)
        assert not b.enabled and b.target is None
        assert "cannot steer the TCP listeners" in caplog.text
        b.decide([0.95, 0.0], 1.0)          # samples change nothing any more
        assert b.target is None and b.moves == 0
        assert caplog.text.count("cannot steer") == 1


def test_a_child_frontend_sheds_when_the_supervisor_asks_over_its_figures_channel():
    """Front-end k > 0 sheds on the supervisor's ``{"shed": SHARE}`` (Frontends.shed ->
    answer_asks), beside the figures asks on the same channel."""
    import asyncio

    from sidecar.frontend.frontends import Frontends, answer_asks

    async def run() -> list:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        conns = [FakeConn(busy=True) for _ in range(16)]
        child_fe = SimpleNamespace(loop=loop, connections=set(conns), shed_total=0)
        answer_asks(child_fe, theirs)
        server = SimpleNamespace(config=None, loop=loop)
        fes = Frontends(server, [[]], board=None)
        fes.children[0].stats_sock = ours
        fes.shed(1, 0.25)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if any(c.closing for c in conns):
                break
        loop.remove_reader(theirs.fileno())
        ours.close()
        theirs.close()
        return conns, child_fe.shed_total

    conns, counted = asyncio.run(run())
    assert sum(c.closing for c in conns) == 4 == counted   # a quarter of 16, counted
