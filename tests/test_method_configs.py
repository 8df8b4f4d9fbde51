"""Method configs: one literal config per name, and a plain name that falls back to the small variant on a
machine without CUDA says so (saved config and start-up), instead of silently changing meaning."""

from __future__ import annotations

import torch
import yaml

from streamsplat_ns.method_configs import methods


def test_one_literal_config_per_name():
    assert set(methods.CONFIGS) == {
        "streamsplat-encoder",
        "streamsplat-decoder",
        "streamsplat-encoder-small",
        "streamsplat-decoder-small",
    }
    for name, cfg in methods.CONFIGS.items():
        assert cfg.method_name == name and cfg.pipeline.model.variant_note == ""
        assert cfg.pipeline.model.stage == ("decoder" if "decoder" in name else "encoder")
    paper = methods.trainer_config("encoder", small=False)
    assert (paper.pipeline.model.encoder.image_height, paper.pipeline.datamanager.batch_size) == (288, 32)
    assert paper is not methods.streamsplat_encoder_config  # a fresh copy: callers may edit it


def test_plain_name_with_cuda_is_the_paper_recipe():
    cfg = methods.for_this_machine("decoder", has_cuda=True)
    assert cfg.pipeline.model.variant_note == "" and cfg.pipeline.model.encoder.image_width == 512
    assert cfg.machine.device_type == "cuda"


def test_cpu_fallback_is_announced_at_start_up(capsys):
    from nerfstudio.data.scene_box import SceneBox

    cfg = methods.for_this_machine("encoder", has_cuda=False)
    note = cfg.pipeline.model.variant_note
    assert "no CUDA" in note and "streamsplat-encoder-small" in note
    assert cfg.method_name == "streamsplat-encoder" and cfg.pipeline.model.encoder.image_height == 64
    assert yaml.load(yaml.dump(cfg), Loader=yaml.Loader).pipeline.model.variant_note == note  # in config.yml
    capsys.readouterr()
    cfg.pipeline.model.setup(
        scene_box=SceneBox(torch.tensor([[-1.0, 0, -1], [1, 5, 1]])), num_train_data=1, metadata={}
    )
    assert "no CUDA device on this machine" in capsys.readouterr().out.replace("\n", " ")
    if not torch.cuda.is_available():  # the registered spec on this machine is that fallback
        assert methods.streamsplat_encoder.config.pipeline.model.variant_note == note
        assert "small CPU variant" in methods.streamsplat_encoder.description
