"""vLLM-Omni's nightly perf case files run as they are (``--omni-cases``).

``reader`` checks a file's rows and maps ``serve_args`` onto a profile, ``marks`` turns a
row's ``mark`` entries into pytest marks, ``load`` drives a server with N prompts at a
concurrency or a request rate, ``bounds`` applies a row's baseline as absolute bounds for
this hardware, ``load_verdict`` judges load bounds (a row's and ``omni_bounds``') on
confidence intervals. ``pytest_omni_perf.case_items`` makes each row's entry a pytest item:
it stands above the engines, ``omni_perf`` and the outcomes it uses, which use this package.
"""
