"""Live mode and the standalone viewer: ``streamsplat-live`` and ``streamsplat-view`` (see docs/viewer.md).

* :mod:`.state`: the bounded hand-overs (frame feed, interval window, statistics);
* :mod:`.viewer`: the viser viewer (one render thread per browser, newest state only);
* :mod:`.session`: source -> engine -> window / recorder, and how a session ends;
* :mod:`.record`: recorded sessions (fp16 intervals, size budget, atomic files);
* :mod:`.replay`: opening a recording or a ``streamsplat-reconstruct`` folder for viewing.
"""
