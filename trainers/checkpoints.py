"""Checkpoints that are whole or absent: written aside and renamed, resumed only when complete.

transformers' `Trainer` writes `checkpoint-N/` file by file, and `train(resume_from_checkpoint=True)` takes the
highest-numbered `checkpoint-N` folder whatever it holds: a process killed during a save leaves a folder that the next
run picks and crashes on (`FileNotFoundError: trainer_state.json`). Here:

- a save is written into `_checkpoint-N.partial/checkpoint-N/`, flushed to disk, and renamed to `checkpoint-N` only
  once every file is there (a rename within a filesystem is atomic); checkpoint rotation runs after the rename, so an
  older checkpoint is never deleted before the newer one is whole. The staging name matches neither
  `get_last_checkpoint`'s `checkpoint-<N>` nor rotation's `checkpoint-*` glob, and its leading underscore keeps it out
  of the Trainer's Hub uploads (`ignore_patterns=["_*", ...]`). Staging folders left by a killed run are removed at
  the next save or resume, with a warning.
- resuming takes the newest *complete* checkpoint (`missing_checkpoint_parts` says what complete means), warns about
  each newer one it skips, and refuses an explicitly named incomplete checkpoint, saying what is missing.
"""

import json
import os
import re
import shutil
import zipfile

from .compat import PREFIX_CHECKPOINT_DIR, logging, rotate_checkpoints

logger = logging.get_logger(__name__)

TRAINER_STATE = "trainer_state.json"
# transformers' just-in-time checkpoint (enable_jit_checkpoint) puts this file in checkpoint-N while it saves.
JIT_INCOMPLETE_MARKER = "checkpoint-is-incomplete.txt"
_NUMBERED = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_STAGING = re.compile(rf"^_{PREFIX_CHECKPOINT_DIR}-\d+\.(partial|replaced)$")
_SINGLE_FILE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
_SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def missing_checkpoint_parts(folder: str, with_optimizer: bool = True) -> list[str]:
    """What `folder` lacks for training to resume from it: an empty list when the checkpoint is complete.

    Complete means every piece the Trainer loads on resume is there and whole:
    - no `checkpoint-is-incomplete.txt` (transformers' marker of an unfinished just-in-time save);
    - `trainer_state.json` holds a JSON object with `global_step`;
    - the model weights: `model.safetensors` / `pytorch_model.bin` (or the PEFT `adapter_model.*`), or a sharded
      index with every shard it lists, or PEFT adapters in sub-folders, an FSDP model state or a DeepSpeed checkpoint
      (`latest` naming a folder that exists);
    - unless `with_optimizer` is False (runs with `save_only_model=True`): the optimizer state (`optimizer.pt`,
      `optimizer.bin`, an FSDP `optimizer*` folder, or DeepSpeed's) and the scheduler state (`scheduler.pt`; DeepSpeed
      keeps its own).
    Whole is checked where it is cheap: a safetensors file is as long as its header says, and a torch file ends with
    its zip directory, which `torch.save` writes last. RNG state files are optional, as they are for the Trainer.
    """
    if not os.path.isdir(folder):
        return ["the folder itself (it does not exist)"]
    names = set(os.listdir(folder))
    missing = []
    if JIT_INCOMPLETE_MARKER in names:
        missing.append(f"a finished save ({JIT_INCOMPLETE_MARKER} is still there)")
    try:
        with open(os.path.join(folder, TRAINER_STATE), encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict) or "global_step" not in state:
            missing.append(f"{TRAINER_STATE} (it holds no global_step)")
    except FileNotFoundError:
        missing.append(TRAINER_STATE)
    except (OSError, ValueError):
        missing.append(f"{TRAINER_STATE} (it is not readable JSON)")

    deepspeed = _deepspeed_folder(folder, names)
    if deepspeed is None:
        weights = _missing_weights(folder, names)
        missing += [weights] if weights else []
    if with_optimizer and deepspeed is None:
        optimizer = [name for name in ("optimizer.pt", "optimizer.bin") if name in names]
        sharded = any("optimizer" in name and os.path.isdir(os.path.join(folder, name)) for name in names)
        if not (sharded or optimizer):
            missing.append("the optimizer state (optimizer.pt)")
        elif optimizer and not _whole(os.path.join(folder, optimizer[0])):
            missing.append(f"a whole {optimizer[0]} (it is truncated)")
        if "scheduler.pt" not in names:
            missing.append("the scheduler state (scheduler.pt)")
        elif not _whole(os.path.join(folder, "scheduler.pt")):
            missing.append("a whole scheduler.pt (it is truncated)")
    return missing


def _deepspeed_folder(folder: str, names: set[str]) -> str | None:
    """The tag folder of a DeepSpeed checkpoint (it holds the weights and the optimizer), None if it is not one."""
    if "latest" not in names:
        return None
    try:
        with open(os.path.join(folder, "latest"), encoding="utf-8") as f:
            tag = f.read().strip()
    except (OSError, ValueError):
        return None
    return os.path.join(folder, tag) if tag and os.path.isdir(os.path.join(folder, tag)) else None


def _missing_weights(folder: str, names: set[str]) -> str | None:
    for name in _SINGLE_FILE_WEIGHTS:
        if name in names:
            return None if _whole(os.path.join(folder, name)) else f"a whole {name} (it is truncated)"
    for index in _SHARD_INDEXES:
        if index in names:
            try:
                with open(os.path.join(folder, index), encoding="utf-8") as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"a readable {index}"
            broken = [shard for shard in shards if not _whole(os.path.join(folder, shard))]
            return f"the weight shards {broken} listed in {index}" if broken else None
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and ("pytorch_model_fsdp" in name or any(
                os.path.isfile(os.path.join(path, weights)) for weights in _SINGLE_FILE_WEIGHTS[2:])):
            return None  # an FSDP model state, or one PEFT adapter per sub-folder
    if "pytorch_model_fsdp.bin" in names:
        return None
    return "the model weights (model.safetensors, pytorch_model.bin, adapter_model.safetensors or a sharded index)"


def _whole(path: str) -> bool:
    """False when a weights/optimizer file is visibly truncated; files of other formats are taken as whole."""
    if not os.path.isfile(path):
        return False
    if path.endswith(".safetensors"):
        try:
            with open(path, "rb") as f:
                header_length = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(header_length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
            return os.path.getsize(path) >= 8 + header_length + end
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
    if path.endswith((".pt", ".bin", ".pth")):
        return zipfile.is_zipfile(path)
    return True


def newest_complete_checkpoint(output_dir: str, with_optimizer: bool = True) -> str:
    """The newest `checkpoint-N` of `output_dir` that training can resume from (see `missing_checkpoint_parts`).

    Newer incomplete checkpoints are skipped with a warning that names them and what they lack. Raises ValueError
    when there is no complete checkpoint.
    """
    if not os.path.isdir(output_dir):
        raise ValueError(f"resume_from_checkpoint=True found no checkpoint: the output directory {output_dir} does "
                         "not exist. Train without resume_from_checkpoint, or set output_dir to the earlier run's.")
    numbered = sorted(((int(match[1]), name) for name in os.listdir(output_dir)
                       if (match := _NUMBERED.match(name)) and os.path.isdir(os.path.join(output_dir, name))),
                      reverse=True)
    skipped = []
    for _, name in numbered:
        path = os.path.join(output_dir, name)
        missing = missing_checkpoint_parts(path, with_optimizer)
        if not missing:
            if skipped:
                logger.warning(f"Resuming from {path}, the newest complete checkpoint; skipped the incomplete "
                               f"{'; '.join(skipped)}.")
            return path
        skipped.append(f"{name} (it lacks {', '.join(missing)})")
    found = f": {'; '.join(skipped)}" if skipped else ""
    raise ValueError(f"No complete checkpoint to resume from in {output_dir}{found}. Train without "
                     "resume_from_checkpoint, or pass the path of a complete checkpoint.")


def require_complete_checkpoint(path: str, with_optimizer: bool = True) -> None:
    """Raise ValueError naming what `path` lacks when training cannot resume from it."""
    if not os.path.isdir(path):
        what = "is a file, not a checkpoint folder" if os.path.exists(path) else "does not exist"
        raise ValueError(f"resume_from_checkpoint={path!r} {what}; pass a checkpoint folder (e.g. "
                         "output_dir/checkpoint-500), or True for the newest complete checkpoint of output_dir.")
    missing = missing_checkpoint_parts(path, with_optimizer)
    if missing:
        hint = (" A checkpoint saved with save_only_model=True holds no optimizer state: to start a new optimizer "
                "from its weights, load the model from the folder instead of resuming."
                if any("optimizer" in part or "scheduler" in part for part in missing) else "")
        raise ValueError(f"Cannot resume from {path}: the checkpoint is incomplete, it lacks {', '.join(missing)}. "
                         "resume_from_checkpoint=True picks the newest complete checkpoint of output_dir." + hint)


def remove_unfinished_saves(run_dir: str) -> None:
    """Delete the staging folders of saves that never finished (the process was killed during them)."""
    if not os.path.isdir(run_dir):
        return
    for name in sorted(os.listdir(run_dir)):
        if _STAGING.match(name):
            logger.warning(f"Removing {os.path.join(run_dir, name)}: a checkpoint save that never finished (the "
                           "process stopped while writing it).")
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)


def publish_checkpoint(staged: str, final: str) -> None:
    """Flush the fully written folder `staged` to disk and rename it to `final`: readers see all of it or nothing.

    A `final` that already exists (a just-in-time checkpoint's placeholder, a checkpoint of an earlier run at the same
    step) is moved aside first and deleted once the new checkpoint is in place.
    """
    _fsync_tree(staged)
    staging_root, run_dir = os.path.dirname(staged), os.path.dirname(final)
    replaced = staging_root.removesuffix(".partial") + ".replaced"
    if os.path.exists(final):
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(staged, final)
    _fsync(run_dir)
    shutil.rmtree(replaced, ignore_errors=True)
    shutil.rmtree(staging_root, ignore_errors=True)


def _fsync_tree(folder: str) -> None:
    """Flush every file and folder entry under `folder`, so that a crash of the machine (not only of the process)
    after the rename cannot leave a checkpoint of empty files. A no-op where folders cannot be opened (Windows)."""
    if os.name != "posix":
        return
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)


def _fsync(path: str) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AtomicCheckpointsMixin:
    """Trainer mixin: checkpoints are written aside and renamed when whole; resuming skips incomplete checkpoints.

    Mixed in before `transformers.Trainer` (or a subclass such as `trl.SFTTrainer`). The Trainer's own
    `_save_checkpoint` does the writing, into `<run_dir>/_checkpoint-N.partial/checkpoint-N`: `_get_output_dir` answers
    the staging folder while it runs. Everything in it that names a folder is then set right: `best_model_checkpoint`
    (recorded in `trainer_state.json`), the Hub upload of the checkpoint and the rotation of old checkpoints, which
    here run after the rename.
    """

    _checkpoint_staging: str | None = None  # the staging folder while a checkpoint is being written
    _checkpoint_push_pending: bool = False

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`, where `resume_from_checkpoint=True` takes the newest complete checkpoint of `output_dir`
        and a checkpoint path is checked to be complete before anything is loaded from it."""
        with_optimizer = not self.args.save_only_model
        if resume_from_checkpoint and self.args.should_save:
            remove_unfinished_saves(self.args.output_dir)
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = newest_complete_checkpoint(self.args.output_dir, with_optimizer)
        elif resume_from_checkpoint:
            require_complete_checkpoint(str(resume_from_checkpoint), with_optimizer)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        return self._checkpoint_staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, f"_{name}.partial")
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        if self.args.should_save:
            remove_unfinished_saves(run_dir)
        self.accelerator.wait_for_everyone()  # no process writes into a staging folder that is being removed

        self._checkpoint_staging, self._checkpoint_push_pending = staging, False
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_staging = None
        if self.state.best_model_checkpoint == staged:  # the Trainer saw checkpoint-N, the best so far, in staging
            self.state.best_model_checkpoint = final
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE))

        self.accelerator.wait_for_everyone()  # every process has written its part (RNG states) of the checkpoint
        if self.args.should_save:
            publish_checkpoint(staged, final)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()  # the checkpoint is published before any process goes on
        if self._checkpoint_push_pending:
            self._checkpoint_push_pending = False
            self._push_from_checkpoint(final)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._checkpoint_staging is not None:  # upload the checkpoint once it has its final name
            self._checkpoint_push_pending = True
            return
        super()._push_from_checkpoint(checkpoint_folder)
