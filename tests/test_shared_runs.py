"""Identical requests share one run: the registry with fake generators, then the live app through
gradio_client (real Fashion-MNIST, the shipped teacher, tiny runs of 500 images and 1 epoch)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from support import wait_for

import app
from kd_core.config import RunConfig
from kd_core.engine.events import Queued
from kd_core.engine.train import run as solo_run
from kd_core.serve import settings
from kd_core.serve.shared_runs import OWN, REPLAY, SHARED, SharedRuns
from kd_core.serve.stack_pool import queued_status
from kd_core.views import run_view, session

ROOT = Path(__file__).resolve().parent.parent
DRESS = str(ROOT / "checkpoints" / "examples" / "3-dress-test-13.png")
TINY = {"temperature": 2.0, "alpha": 0.5, "epochs": 1, "train_size": 500, "repeats": 2}


class Source:
    """A fake run: yields 0..n-1, records how it ended. Gated, it yields an item only once `allow`ed."""

    def __init__(self, n: int = 5, pause_s: float = 0.0, fail_at: int | None = None, gated: bool = False):
        self.n, self.pause_s, self.fail_at = n, pause_s, fail_at
        self.gate = threading.Semaphore(0) if gated else None
        self.made = 0
        self.ended: list[str] = []  # "finished" or "closed", one per generator made

    def __call__(self):
        self.made += 1
        return self.items()

    def allow(self, count: int = 1) -> None:
        self.gate.release(count)

    def items(self):
        try:
            for i in range(self.n):
                time.sleep(self.pause_s)
                if self.gate is not None and not self.gate.acquire(timeout=30):
                    raise TimeoutError("the test never allowed this item")
                if i == self.fail_at:
                    raise ValueError(f"item {i} failed")
                yield i
        except GeneratorExit:
            self.ended.append("closed")
            raise
        self.ended.append("finished")


def take(sub, count: int) -> list:
    return [next(sub) for _ in range(count)]




# ------------------------------------------------------------------------------------ the registry

def test_subscribers_of_one_key_share_one_run_and_each_gets_every_item_in_order():
    runs, source = SharedRuns(), Source(5, gated=True)
    subs = [runs.subscribe("k", source) for _ in range(3)]
    assert [s.how for s in subs] == [OWN, SHARED, SHARED]
    source.allow(2)
    first = take(subs[0], 2)
    source.allow(3)
    assert [first, list(subs[1]), list(subs[2]), list(subs[0])] == [[0, 1], [0, 1, 2, 3, 4],
                                                                     [0, 1, 2, 3, 4], [2, 3, 4]]
    assert (source.made, source.ended, runs.runs_started) == (1, ["finished"], 1)


def test_a_late_subscriber_gets_the_backlog_then_the_live_items():
    runs, source = SharedRuns(), Source(6, gated=True)
    early = runs.subscribe("k", source)
    source.allow(4)
    assert take(early, 4) == [0, 1, 2, 3]
    late = runs.subscribe("k", source)
    assert late.how == SHARED
    assert take(late, 4) == [0, 1, 2, 3]  # the backlog at once; item 4 is not made yet
    source.allow(2)
    assert list(early) == [4, 5] and list(late) == [4, 5]
    assert source.made == 1


def test_threads_subscribing_at_once_all_get_the_whole_run():
    runs, source = SharedRuns(), Source(8, pause_s=0.01)
    start = threading.Barrier(6)

    def visitor(_):
        start.wait()
        return list(runs.subscribe("k", source))

    with ThreadPoolExecutor(6) as pool:
        seen = list(pool.map(visitor, range(6)))
    assert seen == [list(range(8))] * 6
    assert (source.made, source.ended) == (1, ["finished"])


def test_one_subscriber_leaving_does_not_stop_the_run_for_the_others():
    runs, source = SharedRuns(), Source(5, gated=True)
    leaving, staying = runs.subscribe("k", source), runs.subscribe("k", source)
    source.allow(2)
    assert take(leaving, 2) == [0, 1]
    leaving.close()
    assert next(leaving, "nothing") == "nothing"  # a closed subscription yields no more
    source.allow(3)
    assert list(staying) == [0, 1, 2, 3, 4]
    assert source.ended == ["finished"]


def test_the_last_subscriber_leaving_closes_the_generator_and_the_next_request_starts_afresh():
    runs, source = SharedRuns(), Source(5, gated=True)
    a, b = runs.subscribe("k", source), runs.subscribe("k", source)
    source.allow(2)
    take(a, 2)
    take(b, 1)
    a.close()
    b.close()
    assert source.ended == [] and runs.running() == 1  # the generator is busy making item 2
    source.allow(1)
    assert wait_for(lambda: source.ended == ["closed"] and runs.running() == 0)
    again = runs.subscribe("k", source)
    assert again.how == OWN  # a stopped run is neither joined nor replayed
    source.allow(5)
    assert list(again) == [0, 1, 2, 3, 4] and source.made == 2


def test_a_subscriber_that_neither_reads_nor_closes_stops_keeping_the_run_going():
    runs, source = SharedRuns(abandoned_s=0.2), Source(5, gated=True)
    forgotten = runs.subscribe("k", source)  # as a generator Gradio dropped without closing it
    source.allow(1)
    assert next(forgotten) == 0
    time.sleep(0.3)
    source.allow(1)
    assert wait_for(lambda: source.ended == ["closed"] and runs.running() == 0)


def test_a_finished_run_is_replayed_exactly_without_running_again():
    runs, source = SharedRuns(), Source(4)
    original = list(runs.subscribe("k", source))
    replay = runs.subscribe("k", source)
    assert replay.how == REPLAY
    assert list(replay) == original
    assert source.made == 1


def test_only_the_last_keep_finished_runs_are_replayed():
    runs = SharedRuns(keep_finished=2)
    sources = {key: Source(2) for key in "abc"}
    for key in "abc":
        list(runs.subscribe(key, sources[key]))
    assert runs.finished_keys() == ["b", "c"]
    assert runs.subscribe("a", sources["a"]).how == OWN  # evicted: trained again
    assert runs.subscribe("c", sources["c"]).how == REPLAY


def test_a_failing_run_fails_every_subscriber_and_is_not_kept():
    runs, source = SharedRuns(), Source(5, fail_at=2)
    a, b = runs.subscribe("k", source), runs.subscribe("k", source)
    assert take(a, 2) == [0, 1]
    with pytest.raises(ValueError, match="item 2 failed"):
        next(a)
    assert take(b, 2) == [0, 1]
    with pytest.raises(ValueError, match="item 2 failed"):
        next(b)
    assert runs.subscribe("k", source).how == OWN


def test_runs_beyond_max_running_wait_in_order_and_are_told_so():
    runs = SharedRuns(max_running=1, queued_every_s=0.05)
    first, second, third = (Source(n, gated=True) for n in (3, 2, 2))
    a = runs.subscribe("a", first)
    first.allow(1)
    assert next(a) == 0  # a trains
    b, c = runs.subscribe("b", second), runs.subscribe("c", third)
    assert next(c) == Queued(runs_ahead=1, running=1, estimate_s=None, recent_runs=0, mean_run_s=None)
    assert next(b) == Queued(0, 1, None, 0, None)
    assert second.made == 0
    first.allow(2)
    assert list(a) == [1, 2]  # a ends: its slot goes to b, the earlier of the two
    assert wait_for(lambda: second.made == 1) and third.made == 0
    waiting = next(c)
    assert waiting.runs_ahead == 0 and waiting.recent_runs == 1 and waiting.estimate_s is not None
    second.allow(2)
    assert list(b) == [0, 1]
    third.allow(2)
    assert [item for item in c if not isinstance(item, Queued)] == [0, 1]


def test_the_wait_estimate_counts_the_runs_ahead_and_the_slots():
    runs = SharedRuns(max_running=2, queued_every_s=0.0)
    runs._durations.extend([10.0, 20.0])  # recent runs took 15 s on average
    assert runs._estimate(0, [], 15.0) == 0.0  # a free slot: no wait
    assert runs._estimate(3, [], 15.0) == 15.0  # 2 start now, the 3rd after 15 s; ours with them
    assert runs._estimate(4, [], 15.0) == 30.0
    status = queued_status(Queued(2, 2, 30.0, 2, 15.0))
    assert status == ("waiting for a free training slot: 2 runs ahead of yours, 2 training now · estimated "
                      "wait 30 s (from the last 2 runs: 15.0 s each on average)")


# ------------------------------------------------------------------------------------ the live app

def students_of(client: Client) -> session.SessionStudents:
    """The students the server holds in this client's session."""
    [state] = [block for block in app.demo.blocks.values()
               if getattr(block, "delete_callback", None) is session.discard]
    return app.demo.state_holder[client.session_hash][state._id]


def final_acc(update, row: int) -> float:
    """The mean test accuracy (%) of the results table's row (1: CE students, 2: KD students)."""
    return float(update[3]["value"]["data"][row][1].split(" ± ")[0])


def final_kd_acc(update) -> float:
    return final_acc(update, 2)


def test_six_identical_requests_share_one_run_equal_to_a_solo_run(server):
    settings_ = {**TINY, "seed": 101}
    started = app.RUNS.runs_started
    clients = [Client(server, verbose=False) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        outputs = list(pool.map(lambda c: list(c.submit(**settings_, api_name="/distill")), clients))
    assert app.RUNS.runs_started == started + 1  # one run served all six
    finals = [updates[-1] for updates in outputs]
    assert all("done: " in final[0] and "seeds" in final[0] for final in finals)
    statuses = [final[0] for final in finals]
    assert sum("sharing its results" not in s and "replaying" not in s for s in statuses) == 1, statuses
    cfg = settings.make_config(**settings_, lr=RunConfig().lr, student="mlp-small", hide_class="none")
    expected = solo_run(cfg)
    tables = {str(final[3]["value"]["data"]) for final in finals}
    assert len(tables) == 1  # every visitor's results table is the same
    assert {final_kd_acc(final) for final in finals} == {round(100 * expected.kd_acc, 2)}
    assert {final_acc(final, 1) for final in finals} == {round(100 * expected.ce_acc, 2)}

    students = [students_of(client) for client in clients]
    assert len({id(s) for s in students}) == 6
    assert len({id(s.kd.model) for s in students} | {id(s.ce.model) for s in students}) == 12
    assert all(s.kd is s.methods["kd"] for s in students)  # copied together: the KD student is its method's
    pointers = {p.data_ptr() for s in students for p in s.kd.model.parameters()}
    assert len(pointers) == 6 * len(list(students[0].kd.model.parameters()))  # no weights shared
    assert len({s.run_dir for s in students}) == 6
    assert all((s.run_dir / "kd-student.safetensors").is_file() for s in students)
    assert all(Path(final[4]["value"]).read_bytes() == Path(finals[0][4]["value"]).read_bytes()
               for final in finals)  # each visitor's CSV download: the same log

    before = [c.predict(handle_file(DRESS), api_name="/predict")[4] for c in clients[1:]]
    with torch.no_grad():  # one visitor's students change: nobody else's may
        for parameter in students[0].kd.model.parameters():
            parameter.zero_()
    after = [c.predict(handle_file(DRESS), api_name="/predict")[4] for c in clients[1:]]
    assert after == before
    session.discard(students[0])  # one session's files go: the others' stay
    assert all((s.run_dir / "kd-student.safetensors").is_file() for s in students[1:])


def test_the_classroom_benchmark_times_six_identical_visitors(server):
    """bench/classroom.py's rush against this server: no errors, one run, the solo run's accuracies."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("classroom", ROOT / "bench" / "classroom.py")
    classroom = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(classroom)
    settings_ = {"epochs": 1, "train_size": 500, "seed": 404, "repeats": 2}
    visits, stop = classroom.rush(server, [settings_] * 6, stop={**settings_, "seed": 405})
    summary = classroom.summarise(visits)
    assert stop["ended"] and stop["stop_s"] > 0  # the visitor who pressed Stop was answered
    assert (summary["finished"], summary["errors"], summary["shared"]) == (6, 0, 5)
    assert summary["result_s"]["max"] >= summary["first_curve_s"]["max"] >= summary["first_update_s"]["max"]
    defaults = RunConfig()  # the rush leaves T and α to the app's defaults
    expected = solo_run(settings.make_config(**settings_, temperature=defaults.temperature, alpha=defaults.alpha,
                                             lr=defaults.lr, student="mlp-small", hide_class="none"))
    assert {(v["ce_acc"], v["kd_acc"]) for v in visits} == {(round(100 * expected.ce_acc, 2),
                                                            round(100 * expected.kd_acc, 2))}


def test_a_visitor_who_cancels_does_not_stop_the_shared_run(server):
    settings_ = {**TINY, "train_size": 0, "epochs": 2, "seed": 202}  # a few seconds of training
    leaving, staying = Client(server, verbose=False), Client(server, verbose=False)
    job = leaving.submit(**settings_, api_name="/distill")
    for received, _ in enumerate(job, 1):
        if received == 4:  # preparing, Started, Evaluated(0), a Step: training is under way
            break
    started = app.RUNS.runs_started
    stay_job = staying.submit(**settings_, api_name="/distill")
    assert wait_for(lambda: len(stay_job.outputs()) > 0)  # the server has the second visitor's request
    job.cancel()
    assert wait_for(stay_job.done)
    updates = stay_job.outputs()
    assert "done: " in updates[-1][0] and "sharing its results" in updates[-1][0]
    assert app.RUNS.runs_started == started  # the run it joined went on: none was started again
    expected = solo_run(settings.make_config(**settings_, lr=RunConfig().lr, student="mlp-small", hide_class="none"))
    assert final_kd_acc(updates[-1]) == round(100 * expected.kd_acc, 2)


def test_identical_sweeps_share_one_run_and_its_one_heatmap(server, monkeypatch):
    """Three viewers of one sweep: one run, and its heatmap drawn once on the server, whoever views it."""
    from kd_core.views import plots

    drawn, draw = [], plots.figure_data_url
    monkeypatch.setattr(plots, "figure_data_url", lambda figure: drawn.append(1) or draw(figure))
    started = app.SWEEPS.runs_started
    clients = [Client(server, verbose=False) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        finals = list(pool.map(lambda c: c.predict("4, 1", "0.5", 1, 500, 1, api_name="/sweep"), clients))
    assert app.SWEEPS.runs_started == started + 1 and len(drawn) == 1
    assert all(final[0].startswith("done in") for final in finals)
    assert sum("sharing its results" in f[0] or "replaying its results" in f[0] for f in finals) == 2
    assert len({str(final[4]["value"]["data"]) for final in finals}) == 1  # the same grid for all three


def test_predict_and_dark_knowledge_answer_while_every_training_slot_is_busy(server, monkeypatch):
    long = {"epochs": 20, "train_size": 0, "student": "mlp-medium"}  # minutes each
    monkeypatch.setattr(app.POOL, "max_running", 1)  # one slot, so that a second stack must wait for it
    clients = [Client(server, verbose=False) for _ in range(2)]
    # another student each: two stacks (runs that differ in their seeds alone would train as one)
    jobs = [client.submit(**{**long, "student": student}, seed=300, api_name="/distill")
            for client, student in zip(clients, ("mlp-medium", "mlp-small"), strict=True)]
    try:
        assert wait_for(lambda: app.POOL.running() == 1 and
                          any("waiting for a free training slot" in (job.outputs() or [[""]])[-1][0]
                              for job in jobs))
        visitor = Client(server, verbose=False)
        assert visitor.predict(handle_file(DRESS), api_name="/predict")[2]["label"] == "Dress"
        assert "bits at T = 8" in visitor.predict(handle_file(DRESS), 8.0, api_name="/soften")[3]
        assert not any(job.done() for job in jobs)  # answered while the runs still trained or waited
    finally:
        for job in jobs:
            job.cancel()
    assert wait_for(lambda: app.POOL.running() == 0 and run_view.active_runs() == 0, seconds=30)


def test_a_busy_visitor_gets_the_newest_view_not_every_one(monkeypatch):
    """Views are cumulative: after the first curve a visitor is sent at most one per view interval, the newest,
    which keeps the accuracy chart of a skipped view when it leaves the chart unchanged; nothing that changed is
    lost. Views before the first curve (the run starting) are not held back."""
    from kd_core.engine.loop import StackStep
    from kd_core.views import joined
    from kd_core.views.run_view import AccuracyCurves, LossCurves, RunView

    monkeypatch.setattr(joined, "VIEW_INTERVAL_S", 0.5)
    chart = AccuracyCurves((), None, 1)
    curve = LossCurves((StackStep(1, 1, 10, ((1.0, 1.0),), 0.1),))

    def quick_views(cfg):
        for i in range(20):  # 20 views at once, from the 4th with a curve, the 5th with a new accuracy chart
            yield RunView(f"view {i}", i / 20, 0.0, curve if i >= 3 else LossCurves(()), chart if i == 4 else None,
                          10, 1)

    runs = SharedRuns(max_running=1)
    sent = list(joined.join_run(runs, RunConfig(), quick_views, key="quick"))
    assert [view.status for view in sent[:4]] == ["view 0", "view 1", "view 2", "view 3"]  # up to the first curve
    assert len(sent) < 20 and sent[-1].status.startswith("view 19")  # then the newest
    assert sent[-1].accuracies is chart  # carried over from the skipped view 4
