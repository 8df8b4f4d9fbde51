"""Compare StreamSplat with per-scene nerfstudio methods and simple baselines on the same frames.

- :mod:`.protocol`: the clip, key / held-out frames, metrics, baselines;
- :mod:`.nsdata`: the clip as a nerfstudio dataset and its dataparser (with times);
- :mod:`.methods`: nerfstudio methods trained in-process, scored from their saved checkpoints;
- :mod:`.streamsplat`: StreamSplat through the reconstruction engine;
- :mod:`.ckpt`: weights-only loading of nerfstudio checkpoints with an explicit allow-list;
- :mod:`.report`: the table (markdown + JSON) and image grids; :mod:`.run`: the command.
"""
