"""Publishing never leaks: only the allow-listed files of a model or adapter are staged and uploaded.

Every test here runs without the network: uploads go to a monkeypatched `HfApi`.
"""

import tempfile
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from peft import LoraConfig, get_peft_model

from hub_cards import publish, stage
from llada_cli.publish import main
from tests.hub_cards.test_publishing import run_publish_cli, saved_model
from tests.utils import tiny_chat_tokenizer, tiny_model

SECRETS = ("secrets.json", "credentials.json", ".hidden.json", ".env", "id_rsa")
STRAYS = ("notes.txt", "training_args.bin", "train.py")
CORRUPT_WEIGHT = "extra.safetensors"
LINK_OUT = "passwd.json"  # a link to a file outside the folder


def staging_folders() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("llada-publish-*")}


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A tiny model as save_pretrained + tokenizer.save_pretrained write it, and nothing else."""
    folder = tmp_path / "model"
    saved_model(folder)
    return folder


@pytest.fixture
def model_files(model_folder) -> set[str]:
    """What the clean model folder uploads: everything save_pretrained wrote, plus the rendered card."""
    return {path.name for path in model_folder.iterdir()} | {"README.md"}


@pytest.fixture
def seeded_folder(model_folder, model_files, tmp_path) -> Path:
    """The tiny model folder plus secrets, stray files, a sub-folder and a link to a file outside the folder.

    Asks for `model_files` so that the clean folder is listed before it is seeded.
    """
    for name in SECRETS:
        (model_folder / name).write_text('{"token": "hf_not_for_upload"}\n')
    for name in STRAYS:
        (model_folder / name).write_bytes(b"not for upload")
    (model_folder / "checkpoint-10").mkdir()
    (model_folder / "checkpoint-10" / "config.json").write_text("{}")
    outside = tmp_path / "outside" / "passwd"
    outside.parent.mkdir()
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (model_folder / LINK_OUT).symlink_to(outside)
    return model_folder


@pytest.fixture
def uploads(monkeypatch) -> dict:
    """Patch HfApi's create_repo / create_commit: what a commit would upload, as {path_in_repo: bytes}."""
    captured = {"repos": [], "files": {}}

    def create_repo(self, repo_id, **kwargs):
        captured["repos"].append(repo_id)

    def create_commit(self, repo_id, operations, **kwargs):
        for operation in operations:
            source = operation.path_or_fileobj
            captured["files"][operation.path_in_repo] = Path(source).read_bytes() if isinstance(source, str) else source
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0123abcd"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return captured


def refuse_uploads(monkeypatch) -> None:
    """Patch HfApi so that the repository exists and every commit fails as the Hub would refuse it."""

    def refuse(self, *args, **kwargs):
        raise OSError("403 Forbidden\nno write access to org/tiny")

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(HfApi, "create_commit", refuse)


def test_a_corrupt_weight_file_fails_naming_it_before_anything_is_staged(seeded_folder, tmp_path):
    (seeded_folder / CORRUPT_WEIGHT).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ValueError, match=CORRUPT_WEIGHT) as info:
        publish(seeded_folder, "org/tiny", dry_run=True, staging_dir=tmp_path / "staged")
    assert "not valid safetensors" in str(info.value)
    assert not (tmp_path / "staged").exists()


def test_secrets_links_and_strays_are_never_staged_only_the_allow_listed_files(seeded_folder, model_files, tmp_path):
    (seeded_folder / CORRUPT_WEIGHT).write_bytes(b"not safetensors")
    with pytest.raises(ValueError):
        publish(seeded_folder, "org/tiny", dry_run=True, staging_dir=tmp_path / "staged")
    (seeded_folder / CORRUPT_WEIGHT).unlink()
    result = publish(seeded_folder, "org/tiny", dry_run=True, staging_dir=tmp_path / "staged")
    staged = {path.name for path in (tmp_path / "staged").iterdir()}
    assert staged == set(result.files) == model_files
    assert not any((tmp_path / "staged" / name).is_symlink() for name in staged)
    assert set(result.left_out) == {*SECRETS, *STRAYS, LINK_OUT, "checkpoint-10/"}


def test_an_allow_listed_name_linking_out_of_the_folder_is_refused(model_folder, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text('{"token": "hf_not_for_upload"}\n')
    (model_folder / "added_tokens.json").symlink_to(outside)
    with pytest.raises(ValueError, match="added_tokens.json is a link to .*outside the folder"):
        publish(model_folder, "org/tiny", dry_run=True, staging_dir=tmp_path / "staged")
    assert not (tmp_path / "staged").exists()


def test_a_link_to_a_file_inside_the_folder_is_staged_as_a_regular_file(model_folder, model_files, tmp_path):
    (model_folder / "checkpoint-10").mkdir()
    weights = model_folder / "model.safetensors"
    weights.rename(model_folder / "checkpoint-10" / "model.safetensors")
    weights.symlink_to(Path("checkpoint-10") / "model.safetensors")
    result = publish(model_folder, "org/tiny", dry_run=True, staging_dir=tmp_path / "staged")
    staged = tmp_path / "staged" / "model.safetensors"
    assert set(result.files) == model_files and result.left_out == ["checkpoint-10/"]
    assert staged.is_file() and not staged.is_symlink()
    assert staged.read_bytes() == (model_folder / "checkpoint-10" / "model.safetensors").read_bytes()


def test_an_adapter_stages_only_adapter_files(tmp_path):
    folder = tmp_path / "adapter"
    get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(folder)
    tiny_chat_tokenizer().save_pretrained(folder)
    for name in SECRETS:
        (folder / name).write_text('{"token": "hf_not_for_upload"}\n')
    (folder / "optimizer.safetensors").write_bytes(b"an adapter repository carries adapter weights only")
    result = publish(folder, "org/tiny-lora", dry_run=True, base_model="org/base", staging_dir=tmp_path / "staged")
    assert set(result.files) == {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json",
                                 "tokenizer_config.json", "chat_template.jinja"}
    assert set(result.left_out) == {*SECRETS, "optimizer.safetensors"}


@pytest.mark.parametrize("repo_id", ["tiny-llada", "org/tiny/llada", "org/tiny llada", "org/tiny..llada", "/tiny"])
def test_an_invalid_repo_id_fails_before_anything_is_staged(model_folder, tmp_path, temp_root, repo_id):
    before = staging_folders()
    with pytest.raises(ValueError, match="namespace/name") as info:
        publish(model_folder, repo_id, dry_run=True)
    assert repr(repo_id) in str(info.value)
    assert staging_folders() == before
    with pytest.raises(ValueError, match="namespace/name"):
        stage(model_folder, repo_id, tmp_path / "staged")
    assert not (tmp_path / "staged").exists()


def test_the_temporary_staging_folder_is_removed_after_a_dry_run_and_a_caller_s_is_kept(model_folder, tmp_path,
                                                                                          temp_root):
    result = publish(model_folder, "org/tiny", dry_run=True)
    assert staging_folders() == set() and result.staged is None
    assert "README.md" in result.files and "library_name: transformers" in result.card
    kept = publish(model_folder, "org/tiny", dry_run=True, staging_dir=tmp_path / "staged")
    assert kept.staged == tmp_path / "staged" and {p.name for p in kept.staged.iterdir()} == set(kept.files)
    assert staging_folders() == set()


def test_the_temporary_staging_folder_is_removed_after_an_upload(model_folder, temp_root, uploads):
    result = publish(model_folder, "org/tiny")
    assert result.url.startswith("https://huggingface.co/org/tiny/commit/") and result.staged is None
    assert staging_folders() == set()


def test_the_temporary_staging_folder_is_removed_when_publishing_fails(model_folder, temp_root, monkeypatch):
    (model_folder / "generation_config.json").unlink()
    with pytest.raises(ValueError, match="generation_config.json is missing"):
        publish(model_folder, "org/tiny", dry_run=True)
    assert staging_folders() == set()

    saved_model(model_folder)
    refuse_uploads(monkeypatch)
    with pytest.raises(OSError, match="403"):
        publish(model_folder, "org/tiny")
    assert staging_folders() == set()


def test_the_upload_commits_exactly_the_allow_listed_files(seeded_folder, model_files, uploads, temp_root):
    result = publish(seeded_folder, "org/tiny", commit_message="first upload")
    assert uploads["repos"] == ["org/tiny"]
    assert set(uploads["files"]) == set(result.files) == model_files
    for name in model_files - {"README.md"}:
        assert uploads["files"][name] == (seeded_folder / name).read_bytes(), name
    assert uploads["files"]["README.md"].decode() == result.card
    assert b"hf_not_for_upload" not in b"".join(uploads["files"].values())


def test_leftovers_in_a_caller_s_staging_folder_are_refused_and_never_uploaded(model_folder, tmp_path, uploads):
    staging = tmp_path / "staged"
    staging.mkdir()
    (staging / "old-notes.json").write_text('{"token": "hf_not_for_upload"}\n')
    with pytest.raises(ValueError, match="old-notes.json"):
        publish(model_folder, "org/tiny", staging_dir=staging)
    assert uploads["files"] == {} and [p.name for p in staging.iterdir()] == ["old-notes.json"]


def test_a_link_in_a_caller_s_staging_folder_is_refused_not_written_through(model_folder, tmp_path):
    staging = tmp_path / "staged"
    staging.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text("{}\n")
    (staging / "config.json").symlink_to(outside)
    with pytest.raises(ValueError, match="config.json"):
        publish(model_folder, "org/tiny", dry_run=True, staging_dir=staging)
    assert outside.read_text() == "{}\n"


def test_cli_dry_run_prints_the_exact_upload_list_and_what_was_left_out(seeded_folder, model_files, temp_root,
                                                                        capsys):
    assert main([str(seeded_folder), "org/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"would upload model to org/tiny, {len(model_files)} files:"
    assert out[1:1 + len(model_files)] == [f"  {name}" for name in sorted(model_files)]
    left_out = sorted([*SECRETS, *STRAYS, LINK_OUT, "checkpoint-10/"])
    assert out[1 + len(model_files)] == f"left out (not on the upload allow-list): {', '.join(left_out)}"
    assert staging_folders() == set()


@pytest.mark.parametrize("problem", ["repo id", "corrupt weight", "incomplete folder", "upload"])
def test_cli_errors_are_one_line_on_stderr_with_a_non_zero_exit(model_folder, temp_root, monkeypatch, capsys,
                                                                 problem):
    repo_id = "tiny-llada" if problem == "repo id" else "org/tiny"
    if problem == "corrupt weight":
        (model_folder / CORRUPT_WEIGHT).write_bytes(b"not safetensors")
    if problem == "incomplete folder":
        for name in ("generation_config.json", "tokenizer.json"):
            (model_folder / name).unlink()
    if problem == "upload":
        refuse_uploads(monkeypatch)
    code = main([str(model_folder), repo_id] + ([] if problem == "upload" else ["--dry-run"]))
    captured = capsys.readouterr()
    assert code != 0 and captured.out == ""
    assert captured.err.startswith("llada-hf publish: ") and captured.err.count("\n") == 1, captured.err
    expected = {"repo id": "'tiny-llada'", "corrupt weight": CORRUPT_WEIGHT, "incomplete folder": "tokenizer",
                "upload": "403 Forbidden no write access"}[problem]
    assert expected in captured.err
    assert staging_folders() == set()


def test_publish_script_rejects_an_invalid_repo_id_in_one_line_without_a_traceback(model_folder):
    result = run_publish_cli(str(model_folder), "not a repo", "--dry-run")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "'not a repo'" in result.stderr and "namespace/name" in result.stderr
    assert "Traceback" not in result.stderr
