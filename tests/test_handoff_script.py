"""``benchmarks/handoff.py`` runs and reports what it says it measures: a lock wake and the
timeline of a two-part `parallel` call whose parts ran on two threads."""


def test_handoff_measures_a_lock_wake_and_a_two_thread_parallel_call(capsys, benchmark_script):
    from layoutops.kernels.threads import set_num_threads

    handoff = benchmark_script("handoff")
    wake = handoff.lock_wake(20, 10.0)
    assert wake["release_us"] > 0 and wake["wake_delay_us"] > 0  # woken after the release began
    previous = set_num_threads(2)
    try:
        line = handoff.parallel_timeline(5, 4096)
    finally:
        set_num_threads(previous)
    # both parts ran, each within the call, and the call returned after both ended
    assert 0 <= line["caller_start"] < line["caller_end"] <= line["return"]
    assert 0 <= line["worker_start"] < line["worker_end"] <= line["return"]
    handoff.main(["--repeat", "5", "--rows", "4096", "--sleep", "10"])
    out = capsys.readouterr().out
    assert "lock wake after 10 us blocked" in out and "of hand-offs and bookkeeping" in out
