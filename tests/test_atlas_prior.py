"""The vision networks' spatial prior: the training anatomy carried onto the scans by the atlas fit,
made into a signed-distance prior per target, added to the dynamic head's logits times a gain from phi, and made
the same way in training (from a real fit to the synthetic subject) as at inference."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.imaging.register import Registration
from voxelprompt.model.agent import ModelVision
from voxelprompt.model.inputs import on_scan_grid, working_grid
from voxelprompt.model.config import PRESETS
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.model.vision import PRIOR_GAIN_START, DynamicHead, VisionNetworks
from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library
from voxelprompt.synth import atlas, labels
from voxelprompt.tasks.subjects import Requirements, synthesize
from voxelprompt.train import episodes
from voxelprompt.train.loop import _carried_onto_first_session, cropped, with_priors
from voxelprompt.train.objective import Objective, TargetObjective
from voxelprompt.train.targets import target_batch

TEST = PRESETS["test"]
PRIOR = replace(TEST, vision=replace(TEST.vision, head="dynamic", atlas_prior=True))


@pytest.fixture(scope="module")
def subject(anatomy_cache):
    """A 4 mm synthetic subject with a T1w."""
    return synthesize(Requirements(contrasts=("T1w",)), np.random.default_rng(2), 4.0, max_contrasts=1)


@pytest.fixture(scope="module")
def carried(subject):
    scans = subject.scans
    return atlas.carried_onto(scans, scans[0].volume.grid)


def test_a_prior_is_sure_far_from_the_carried_boundary_and_zero_where_the_atlas_knows_nothing():
    carried = np.zeros((30, 30, 30), np.uint16)
    hippocampus = labels.target("left hippocampus")
    carried[10:20, 10:20, 10:20] = min(hippocampus.label_ids)
    prior = atlas.prior(carried, "left hippocampus", (2.0, 2.0, 2.0))
    assert prior.dtype == np.float32 and prior.shape == carried.shape
    assert -1 <= prior.min() and prior.max() <= 1
    assert prior[15, 15, 15] > 0.9 and prior[2, 2, 2] < -0.99
    # the carried boundary (between voxels 9 and 10) is uncertain: a registration error away, either side
    assert prior[9, 15, 15] == pytest.approx(-prior[10, 15, 15]) and 0 < prior[10, 15, 15] < 0.6
    # the union it belongs to has it too; a structure the atlas does not place there has none
    assert atlas.prior(carried, "left and right hippocampus", (2.0, 2.0, 2.0))[15, 15, 15] > 0.9
    assert atlas.prior(carried, "right hippocampus", (2.0, 2.0, 2.0)).max() < -0.99
    # a lesion is no anatomy: no information anywhere
    assert not atlas.prior(carried, "white matter hyperintensities", (2.0, 2.0, 2.0)).any()


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.0, 3.0)])
def test_a_prior_is_positive_exactly_on_the_carried_mask_so_small_structures_keep_their_volume(spacing):
    """The carried mask smoothed by 2 mm and thresholded at one half lost 18 % of a hippocampus and
    25 % of the lateral ventricles on the demo's 2 mm grid: thin and curved structures shrink."""
    carried = np.zeros((24, 24, 24), np.uint16)
    centre = np.indices(carried.shape) - 11.5
    ball = (centre ** 2 * (np.asarray(spacing)[:, None, None, None] / 2.0) ** 2).sum(axis=0) < 2.5 ** 2
    carried[ball] = min(labels.target("left amygdala").label_ids)
    np.testing.assert_array_equal(atlas.prior(carried, "left amygdala", spacing) > 0, ball)


def test_a_new_prior_head_gives_the_priors_mask_and_lets_the_readout_in_where_the_prior_is_unsure():
    torch.manual_seed(0)
    head = DynamicHead(6, 4, 5, prior=True)
    plain = DynamicHead(6, 4, 5)
    plain.load_state_dict(head.state_dict(), strict=False)
    features, phi = torch.randn(6, 5, 4, 3), torch.randn(2, 5)
    prior = torch.rand(2, 5, 4, 3) * 2 - 1
    readout = plain(features, phi)
    gain = torch.nn.functional.softplus(torch.tensor(PRIOR_GAIN_START))
    # new: every target takes the prior alone, with the same gain
    torch.testing.assert_close(head(features, phi, prior), gain * prior)
    assert not head(features, phi).any()  # no prior given: no information, and no readout yet
    # learnt: the readout's scale and the prior's gain are each target's own
    with torch.no_grad():
        head.weighting.weight[1, 0] = 1.0
    scale = phi[:, 0][:, None, None, None]
    torch.testing.assert_close(head(features, phi, prior), scale * readout * (1 - prior.abs()) + gain * prior)
    # only where the prior is unsure: deep inside and far outside it, the prior alone decides
    certain = torch.sign(prior)
    torch.testing.assert_close(head(features, phi, certain), gain * certain)
    torch.testing.assert_close(head(features, phi), scale * readout)  # no prior: the readout alone
    with pytest.raises(ValueError, match="dynamic"):
        VisionNetworks(replace(TEST.vision, atlas_prior=True), 32)


def test_a_target_batch_holds_each_targets_prior_cut_to_its_box(tokenizer, subject, carried):
    picked = [("anatomy", "left hippocampus"), ("anatomy", "brainstem")]
    whole = target_batch(tokenizer, subject, 2, np.random.default_rng(1), picked=picked, carried=carried)
    spacing = subject.scans[0].volume.spacing_mm
    for prior, (_, target) in zip(whole.priors, picked):
        np.testing.assert_array_equal(prior, atlas.prior(carried, target, spacing))
    box = ((3, 4, 5), (20, 22, 24))
    cut = target_batch(tokenizer, subject, 2, np.random.default_rng(1), box=box, picked=picked, carried=carried)
    assert cut.priors.shape == cut.truths.shape == (2, 17, 18, 19)
    np.testing.assert_array_equal(cut.priors, whole.priors[:, 3:20, 4:22, 5:24])
    assert target_batch(tokenizer, subject, 2, np.random.default_rng(1), picked=picked).priors is None


def test_the_carried_atlas_lies_on_the_subjects_anatomy(subject, carried):
    """The fit is the evaluation baseline's: on a deformed copy of the atlas, the carried brainstem
    overlaps the subject's own."""
    truth = labels.target("brainstem").mask(subject.sessions[0].synthetic.label_map.array)
    mask = labels.target("brainstem").mask(carried)
    assert 2 * (truth & mask).sum() / (truth.sum() + mask.sum()) > 0.5


def test_the_vision_stage_learns_the_prior_gain(tokenizer, subject, carried):
    torch.manual_seed(0)
    model = VoxelPromptModel(PRIOR, tokenizer)
    model.agent.requires_grad_(False)
    batch = target_batch(tokenizer, subject, 4, np.random.default_rng(4), box=((0, 0, 0), (20, 20, 20)),
                         carried=carried)
    TargetObjective(model)(batch).total.backward()
    # a new head starts from the prior: its gain and the readout's scale learn first
    assert model.vision.head.weighting.bias.grad.abs().min() > 0
    # scans the atlas could not be registered to train with a prior of zero
    TargetObjective(model)(replace(batch, priors=None)).total.backward()


def test_inference_segments_with_the_prior_of_the_target_the_program_names(tokenizer, subject, carried):
    """A new head's mask is exactly the prior's positive part: the prior reaching the head is the
    named target's, on the scans' grid."""
    torch.manual_seed(0)
    model = VoxelPromptModel(replace(PRIOR, vision=replace(PRIOR.vision, working_spacing_mm=4.0)), tokenizer).eval()
    scans = [scan for scan in subject.scans if scan.session == subject.sessions[0].label]
    vision = ModelVision(model)
    vision.latents = [torch.zeros(PRIOR.vision.phi_dim) for _ in range(3)]
    environment = Environment(Library(scans, vision).functions())
    feedback = environment.run('e = encode(scans())\nh = segment(e, "left hippocampus")\nw = segment(e, "white matter hyperintensities")')
    assert feedback.ok, feedback.error
    spacing = scans[0].volume.spacing_mm
    hippocampus = environment.namespace["h"]
    np.testing.assert_array_equal(hippocampus.array > 0, atlas.prior(carried, "left hippocampus", spacing) > 0)
    assert not environment.namespace["w"].array.any()  # no prior, and no readout yet: nothing


def test_scans_the_atlas_cannot_be_registered_to_give_no_prior():
    tiny = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))  # too small to be a head
    assert atlas.carried_onto([Scan(tiny, "T1w", "01", "2020-01-01")], tiny.grid) is None


def test_the_joint_stage_gives_every_segmentation_its_prior_and_trains_with_it(tokenizer, subject, carried):
    steps = ['e = encode(scans())\nread(e)', 'm = segment(e, "left lateral ventricle")\nv = volume_mm3(m)\nread(v)',
             'stop()']
    episode = episodes.from_execution(tokenizer, "how large is the left lateral ventricle?", steps, subject)
    session = subject.sessions[0].label
    with_priors(episode, {session: carried})
    (call,) = [c for c in episode.calls if c.kind == "segment"]
    spacing = subject.scans[0].volume.spacing_mm
    np.testing.assert_array_equal(call.prior.array, atlas.prior(carried, "left lateral ventricle", spacing))
    episode = cropped(episode, subject.sessions[0].synthetic.label_map.array > 0, (20, 20, 20), np.random.default_rng(1))
    assert call.prior.shape == call.truth.shape == (20, 20, 20)
    torch.manual_seed(0)
    model = VoxelPromptModel(PRIOR, tokenizer)
    losses = Objective(model, max_segmentations=1)([], episode)
    losses.total.backward()
    assert model.vision.head.weighting.bias.grad.abs().min() > 0
    call.prior = None  # an episode made without priors cannot train networks that take one
    with pytest.raises(ValueError, match="prior"):
        Objective(model, max_segmentations=1)([], episode)


def test_the_vision_stage_carries_the_atlas_onto_the_first_session_it_trains_on(subject, carried):
    np.testing.assert_array_equal(_carried_onto_first_session(subject), carried)


def test_a_mask_decided_on_the_working_grid_keeps_its_volume_on_a_finer_scan():
    """Interpolating logits that fall off more steeply outside a structure than inside (+0.5 inside,
    -8 outside) moved its boundary inwards: the demo's right amygdala lost 36 % of its volume between
    the 2 mm working grid and its 1 mm T1w."""
    scan = Volume(np.zeros((40, 40, 40), np.float32), np.eye(4))
    coarse = working_grid(scan.grid, 2.0)
    logits = np.full(coarse.shape, -8.0, np.float32)
    logits[7:12, 8:11, 6:13] = 0.5
    mask = on_scan_grid(Volume((logits > 0).astype(np.uint8), coarse.affine), scan)
    assert mask.grid.is_same(scan.grid) and mask.array.dtype == np.uint8
    assert mask.array.sum() * np.prod(scan.spacing_mm) == (logits > 0).sum() * np.prod(coarse.spacing_mm)


def test_an_image_is_fitted_once_whatever_object_holds_it(monkeypatch, tmp_path, subject):
    """The registration baseline and every encode of a subject's T1w ask for the same fit: it is made
    once per content, and a changed voxel, affine, modality or thread count makes a new one."""
    made = []

    def fitted(image, modality, threads):
        made.append(modality)
        return Registration(sitk.AffineTransform(3), -0.5, 10, "converged")

    monkeypatch.setattr(atlas, "_fit_path", lambda key: tmp_path / "atlas-fits" / f"{key}.json")
    monkeypatch.setattr(atlas, "_fits", type(atlas._fits)())
    monkeypatch.setattr(atlas, "_fit_atlas", fitted)
    image = subject.scans[0].volume
    first = atlas.fit_atlas(image)
    assert atlas.fit_atlas(Volume(image.array.copy(), image.affine.copy())) is first
    assert len(made) == 1
    changed = image.array.copy()
    changed.flat[0] += 1
    shifted = image.affine.copy()
    shifted[0, 3] += 1.0
    for other, modality, threads in ((Volume(changed, image.affine), "T1w", 1), (Volume(image.array, shifted), "T1w", 1),
                                     (image, "T2w", 1), (image, "T1w", 2)):
        assert atlas.fit_atlas(other, modality, threads) is not first
    assert len(made) == 5


def test_a_fit_made_by_one_process_is_read_back_by_the_next_bit_for_bit(monkeypatch, tmp_path, subject):
    """A study run again (new prompts, a failed job) reads its fits from the cache instead of making
    them: the stored fit maps every point exactly as the one made, and a damaged entry is made again."""
    monkeypatch.setattr(atlas, "_fit_path", lambda key: tmp_path / "atlas-fits" / f"{key}.json")
    monkeypatch.setattr(atlas, "_fits", type(atlas._fits)())
    image = subject.scans[0].volume
    made = atlas.fit_atlas(image)
    stored = list((tmp_path / "atlas-fits").glob("*.json"))
    assert len(stored) == 1
    monkeypatch.setattr(atlas, "_fits", type(atlas._fits)())  # a new process
    monkeypatch.setattr(atlas, "_fit_atlas", lambda *args: pytest.fail("the stored fit was made again"))
    read = atlas.fit_atlas(image)
    assert read is not made and read.metric_value == made.metric_value and read.iterations == made.iterations
    points = np.random.default_rng(0).uniform(-100, 100, (20, 3))
    assert all(read.transform.TransformPoint(p.tolist()) == made.transform.TransformPoint(p.tolist()) for p in points)
    assert np.array_equal(atlas.carry_labels(image, read).array, atlas.carry_labels(image, made).array)

    stored[0].write_text("{not json")
    monkeypatch.setattr(atlas, "_fits", type(atlas._fits)())
    remade = []
    monkeypatch.setattr(atlas, "_fit_atlas", lambda *args: remade.append(1) or made)
    assert atlas.fit_atlas(image) is made and remade == [1]
    assert Registration.from_dict(json.loads(stored[0].read_text())).metric_value == made.metric_value
