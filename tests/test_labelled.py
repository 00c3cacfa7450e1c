"""The lab's own labelled scans (voxelprompt/study/labelled.py): the manifest and label table are checked
row by row, a scan becomes a subject whose ground truth is its label map, and training draws only
tasks and targets that the label map annotates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import save_volume
from voxelprompt.core.volume import Volume
from voxelprompt.study import labelled
from voxelprompt.synth import labels
from voxelprompt.synth.subject import synthesize_subject
from voxelprompt.tasks.values import allowed
from voxelprompt.train.loop import ImagedEpisodes

# The lab's own numbering of the five structures it labelled.
LAB_LABELS = {7: "left hippocampus", 8: "right hippocampus", 11: "left lateral ventricle",
              12: "right lateral ventricle", 30: "brainstem"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, anatomy_cache) -> Path:
    """A folder with one labelled scan set (T1w + FLAIR of a synthetic subject, its label map in the
    lab's numbering, with one extra value the table does not name) and its manifest."""
    folder = tmp_path_factory.mktemp("lab")
    subject = synthesize_subject(np.random.default_rng(5), ("T1w", "FLAIR"), spacing_mm=2.0)
    own = np.zeros(subject.label_map.shape, np.int16)
    for value, name in LAB_LABELS.items():
        own[subject.label_map.array == labels.label_by_name(name).id] = value
    own[subject.label_map.array == labels.label_by_name("left thalamus").id] = 99  # not in the table: unlabelled
    save_volume(subject.label_map.with_array(own), folder / "sub-01_labels.nii.gz", dtype=np.int16)
    for name, image in subject.images.items():
        save_volume(image, folder / f"sub-01_{name}.nii.gz")
    (folder / "labels.tsv").write_text("value\tname\n" + "".join(f"{v}\t{n}\n" for v, n in LAB_LABELS.items()))
    (folder / "manifest.csv").write_text("subject,images,label_map,label_table\n"
                                         "sub-01,sub-01_T1w.nii.gz;FLAIR:sub-01_FLAIR.nii.gz,sub-01_labels.nii.gz,labels.tsv\n")
    np.save(folder / "truth.npy", subject.label_map.array)
    return folder


def test_manifest_rows_become_subjects_whose_truth_is_the_label_map(lab):
    (entry,) = labelled.load_manifest(lab / "manifest.csv")
    assert [m for m, _ in entry.images] == ["T1w", "FLAIR"]
    subject = labelled.task_subject(entry)
    truth = np.load(lab / "truth.npy")
    label_map = subject.sessions[0].synthetic.label_map.array
    for name in LAB_LABELS.values():
        identifier = labels.label_by_name(name).id
        assert np.array_equal(label_map == identifier, truth == identifier), name
    assert not np.isin(label_map, [labels.label_by_name("left thalamus").id]).any()
    assert set(np.unique(label_map)) == {0} | {labels.label_by_name(n).id for n in LAB_LABELS.values()}
    assert subject.contrasts == ("T1w", "FLAIR") and len(subject.scans) == 2
    assert subject.labelled == frozenset(labels.label_by_name(n).id for n in LAB_LABELS.values())


def test_only_annotated_targets_are_offered(lab):
    subject = labelled.task_subject(labelled.load_manifest(lab / "manifest.csv")[0])
    anatomy = set(allowed("anatomy", subject))
    assert {"left hippocampus", "left and right hippocampus", "brainstem", "left lateral ventricle"} <= anatomy
    assert not anatomy & {"brain", "left thalamus", "ventricular system", "left frontal lobe"}
    assert allowed("ventricle", subject) == ["left lateral ventricle", "right lateral ventricle",
                                             "left and right lateral ventricle"]
    assert allowed("lateral_structure", subject) == ["hippocampus", "lateral ventricle"]


def test_training_episodes_on_labelled_scans_ask_only_for_labelled_targets(lab, tokenizer):
    dataset = ImagedEpisodes(tokenizer.to_str(), [3], 2.0, (48, 56, 48), 4, labelled=str(lab / "manifest.csv"),
                             labelled_fraction=1.0)
    annotated = {n for n in LAB_LABELS.values()} | {"left and right hippocampus", "left and right lateral ventricle"}
    seen = set()
    for episode, _ in zip(iter(dataset), range(8)):
        for call in episode.calls:
            if call.kind == "segment":
                assert call.target in annotated
                assert call.truth.array.any()
                seen.add(call.target)
    assert seen, "labelled scans gave no segmentation episode"


def _manifest(folder: Path, rows: str) -> Path:
    path = folder / "bad.csv"
    path.write_text("subject,images,label_map,label_table\n" + rows)
    return path


def test_bad_manifest_rows_are_all_reported_by_row(lab):
    path = _manifest(lab, "sub-01,missing_T1w.nii.gz,sub-01_labels.nii.gz,labels.tsv\n"
                          ",sub-01_T1w.nii.gz,sub-01_labels.nii.gz,labels.tsv\n"
                          "sub-02,sub-01_T1w.nii.gz,sub-01_labels.nii.gz,\n"
                          "sub-03,T3w:sub-01_T1w.nii.gz,sub-01_labels.nii.gz,labels.tsv\n")
    with pytest.raises(InputError) as caught:
        labelled.load_manifest(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    for expected in ("row 2: image", "missing_T1w.nii.gz not found", "row 3: empty subject",
                     "row 4: no label table given", "row 5:", "T3w"):
        assert expected in message


def test_manifest_without_a_column_or_rows(lab):
    path = lab / "columns.csv"
    path.write_text("subject,images,label_map\nsub-01,a,b\n")
    with pytest.raises(InputError, match="missing column.*label_table"):
        labelled.load_manifest(path)
    with pytest.raises(InputError, match="lists no scans"):
        labelled.load_manifest(_manifest(lab, ""))
    with pytest.raises(InputError, match="not found"):
        labelled.load_manifest(lab / "absent.csv")


def test_label_table_names_must_be_base_labels(lab, tmp_path):
    table = tmp_path / "labels.tsv"
    table.write_text("value\tname\n1\tleft hippocampus\nx\tbrainstem\n3\tleft hipocampus\n")
    with pytest.raises(InputError) as caught:
        labelled.label_table(table)
    assert "row 3: value 'x' is not an integer" in str(caught.value)
    assert "row 4: 'left hipocampus' is not a base label" in str(caught.value)


def test_a_table_that_names_nothing_in_the_label_map(lab, tmp_path):
    (tmp_path / "labels.tsv").write_text("value\tname\n1234\tleft hippocampus\n")
    for name in ("sub-01_T1w.nii.gz", "sub-01_labels.nii.gz"):
        (tmp_path / name).symlink_to(lab / name)
    path = tmp_path / "manifest.csv"
    path.write_text("subject,images,label_map,label_table\nsub-01,sub-01_T1w.nii.gz,sub-01_labels.nii.gz,labels.tsv\n")
    with pytest.raises(InputError, match="none of the values of labels.tsv occur in the label map"):
        labelled.task_subject(labelled.load_manifest(path)[0])


def test_images_that_do_not_overlap_the_label_map(lab, tmp_path):
    (tmp_path / "labels.tsv").write_text("value\tname\n7\tleft hippocampus\n")
    (tmp_path / "sub-01_labels.nii.gz").symlink_to(lab / "sub-01_labels.nii.gz")
    far = np.eye(4)
    far[:3, 3] = 5000.0
    save_volume(Volume(np.arange(64, dtype=np.float32).reshape(4, 4, 4) + 1, far), tmp_path / "sub-01_T1w.nii.gz")
    path = tmp_path / "manifest.csv"
    path.write_text("subject,images,label_map,label_table\nsub-01,sub-01_T1w.nii.gz,sub-01_labels.nii.gz,labels.tsv\n")
    with pytest.raises(InputError, match="does not overlap the label map"):
        labelled.task_subject(labelled.load_manifest(path)[0])
