import contextlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from electra.atomic import OutputExistsError, folder_lock, publish_dir, publish_file, publishing_file
from electra.checkpoint import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_dir,
)
from electra.config import tiny
from electra.model import Electra
from electra.tokenizer import SPECIAL_TOKENS, from_vocab, save_tokenizer
from tests.conftest import batch, perturb


def test_checkpoint_round_trip_keeps_weights_config_and_state(tmp_path):
    model = perturb(Electra(tiny()))
    state = {"step": 7, "rng": torch.get_rng_state(), "optimizer": {"lr": 1e-3}}
    save_checkpoint(step_dir(tmp_path, 7), model, train_state=state, meta={"preset": "tiny"})
    ckpt = load_checkpoint(tmp_path, with_train_state=True)
    assert ckpt.path == step_dir(tmp_path, 7)
    assert ckpt.model.cfg == model.cfg and ckpt.meta == {"preset": "tiny"}
    assert ckpt.train_state["step"] == 7 and torch.equal(ckpt.train_state["rng"], state["rng"])
    for a, b in zip(model.state_dict().values(), ckpt.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_damage_that_still_parses_and_a_missing_train_state_are_named(tmp_path):
    model = perturb(Electra(tiny()))
    save_checkpoint(step_dir(tmp_path, 1), model, train_state={"step": 1})
    weights = step_dir(tmp_path, 1) / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-400:] = b"\xff" * 400  # NaNs in the last tensor: the file still parses
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"step-00000001 is damaged .*model.safetensors changed since it was saved"):
        load_checkpoint(tmp_path)
    save_checkpoint(step_dir(tmp_path, 2), model, train_state={"step": 2})
    (step_dir(tmp_path, 2) / "train_state.pt").unlink()
    with pytest.raises(ValueError, match=r"step-00000002 is damaged .*train_state.pt missing\); delete that folder"):
        load_checkpoint(tmp_path, with_train_state=True)
    assert load_checkpoint(step_dir(tmp_path, 2)).train_state is None  # the weights load (export) without it
    config = step_dir(tmp_path, 2) / "config.json"
    record = json.loads(config.read_text())
    record["model"]["discriminator"]["hidden_size"] *= 2  # an edit that still parses
    config.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"model.safetensors does not fit config.json's \"model\" record \(size mism"):
        load_checkpoint(step_dir(tmp_path, 2))
    record["model"] = None
    config.write_text(json.dumps(record))
    with pytest.raises(ValueError, match='config.json\'s "model" record is not a model'):
        load_checkpoint(step_dir(tmp_path, 2))
    save_checkpoint(step_dir(tmp_path, 3), model)  # no train state saved: none wanted
    config = step_dir(tmp_path, 3) / "config.json"  # as one saved before hashes were recorded
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "sha256"}))
    assert load_checkpoint(tmp_path).train_state is None
    with pytest.raises(ValueError, match=r"step-00000003 is damaged .*train_state.pt missing"):
        load_checkpoint(tmp_path, with_train_state=True)


def test_newest_complete_checkpoint_wins_and_pruning_keeps_the_newest(tmp_path, capsys):
    model = Electra(tiny())
    for step in (10, 200, 30):
        save_checkpoint(step_dir(tmp_path, step), model)
    # a write interrupted before its rename leaves only a hidden temporary folder
    (tmp_path / "checkpoints" / ".step-00000300.tmp-dead").mkdir()
    # a folder that lost its weights is not complete
    broken = step_dir(tmp_path, 400)
    broken.mkdir()
    (broken / "config.json").write_text("{")
    assert find_checkpoint(tmp_path) == step_dir(tmp_path, 200)
    assert capsys.readouterr().err == (
        f"note: {broken} is newer but not a complete checkpoint (config.json is not valid JSON); using step-00000200\n"
    )
    prune_checkpoints(tmp_path, keep=2)
    assert list_checkpoints(tmp_path) == [step_dir(tmp_path, 30), step_dir(tmp_path, 200)]


def test_a_file_write_removes_what_a_killed_write_left_and_spares_a_live_one(tmp_path, capsys):
    import fcntl

    from electra.atomic import publish_file, publishing_file

    (tmp_path / ".out.jsonl.tmp-dead").write_text('{"half": ')  # kill -9 mid-write: nobody holds it
    with publishing_file(tmp_path / "out.jsonl") as live:
        live.write("a\n")
        with open(tmp_path / ".out.jsonl.tmp-live", "w") as other:  # another writer still at work
            fcntl.flock(other.fileno(), fcntl.LOCK_EX)
            publish_file(tmp_path / "out.jsonl", "b\n")
    assert "note: removed " + str(tmp_path / ".out.jsonl.tmp-dead") in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.jsonl.tmp-live", "out.jsonl"]
    assert (tmp_path / "out.jsonl").read_text() == "a\n"  # the last to finish


def test_a_folder_that_cannot_be_written_is_named_with_the_output_not_its_temporary_file(tmp_path, monkeypatch):
    import builtins
    import errno

    from electra.atomic import publishing_file

    real_open = builtins.open

    def read_only(path, *args, **kwargs):  # a read-only mount (root ignores chmod, so it is simulated)
        if str(path).startswith(str(tmp_path / "ro")) and args and args[0].startswith("w"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(builtins, "open", read_only)
    refused = pytest.raises(PermissionError, match=f"^cannot write {tmp_path / 'ro' / 'r.json'}: .* not writable here")
    with refused, publishing_file(tmp_path / "ro" / "r.json") as f:
        f.write("{}")
    assert list((tmp_path / "ro").iterdir()) == []


def test_no_room_to_write_is_named_with_the_output_and_what_to_do(tmp_path):
    import errno

    from electra.atomic import write_error

    target = tmp_path / "out"
    for e in (
        OSError(errno.ENOSPC, "No space left on device"),
        Exception("No space left on device (os error 28)"),  # safetensors', tokenizers' way
    ):
        said = write_error(e, target)
        assert said.errno == errno.ENOSPC and f"while writing {target}; a full disk or quota: make room" in str(said)
    assert write_error(Exception("File too large (os error 27)"), target).errno == errno.EFBIG
    short = write_error(OSError("32000 requested and 18368 written"), target)  # numpy's: no cause, room left here
    assert short.errno == errno.EIO and f"writing {target} failed (32000 requested" in str(short)
    assert write_error(OSError(errno.EACCES, "Permission denied"), target) is None  # clear as it is
    assert write_error(ValueError("not a write failure"), target) is None


def test_a_checkpoint_that_does_not_fit_ends_with_a_message_not_a_traceback(tmp_path, tiny_data):
    import resource

    # room for the first checkpoint's weights (117 KB), not its optimizer state (278 KB): torch.save fails mid-file
    limit = 200 << 10
    result = subprocess.run(
        [sys.executable, "-m", "electra", "pretrain", "--data", str(tiny_data), "--out", str(tmp_path / "run")]
        + ["--preset", "tiny", "--max-steps", "4", "--batch-size", "8", "--checkpoint-every", "2", "--quiet"],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "File too large while writing " + str(tmp_path / "run" / "checkpoints" / "step-00000002") in result.stderr
    assert "a file-size limit (ulimit -f): raise it, then run the command again with --resume" in result.stderr
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []  # nothing half-written


def test_a_checkpoint_pruned_while_it_is_read_gives_way_to_the_newest(tmp_path, monkeypatch):
    from electra import checkpoint

    model = Electra(tiny())
    save_checkpoint(step_dir(tmp_path, 2), model)
    verify = checkpoint._verify

    def live_run_moves_on(path, hashes, with_train_state):  # saves step 3 and prunes step 2 (--keep-checkpoints 1)
        if path.name == "step-00000002":
            save_checkpoint(step_dir(tmp_path, 3), model)
            prune_checkpoints(tmp_path, keep=1)
        return verify(path, hashes, with_train_state)

    monkeypatch.setattr(checkpoint, "_verify", live_run_moves_on)
    assert load_checkpoint(tmp_path).path == step_dir(tmp_path, 3)


def test_a_failed_publish_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), publish_dir(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_a_replacement_stopped_between_its_renames_leaves_the_old_folder_in_place(tmp_path, monkeypatch):
    with publish_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("old")
    rename = os.rename

    def interrupted(src, dst):  # Ctrl-C after the old folder moved aside, before the new one moved in
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        rename(src, dst)

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt), publish_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "a.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "a.txt").read_text() == "old"


def test_a_folder_another_command_wrote_meanwhile_is_kept_without_force(tmp_path):
    meanwhile = "written by another command while this one ran"
    with pytest.raises(OutputExistsError, match=meanwhile), publish_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("ours")
        (tmp_path / "out").mkdir()  # a second prepare into the same --out finished first
        (tmp_path / "out" / "a.txt").write_text("theirs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "a.txt").read_text() == "theirs"
    with publish_dir(tmp_path / "out", overwrite=True) as tmp:  # --force replaces it, as before
        (tmp / "a.txt").write_text("ours")
    assert (tmp_path / "out" / "a.txt").read_text() == "ours"


def test_a_write_removes_what_a_killed_write_left_and_spares_a_live_one(tmp_path, capsys):
    dead, live = tmp_path / ".out.tmp-dead", tmp_path / ".out.tmp-live"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "half.bin").write_bytes(b"x")
    (tmp_path / ".other.tmp-dead").mkdir()  # another output's: not this write's business
    with folder_lock(live):  # a writer still at work holds its folder
        with publish_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("a")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-dead", ".out.tmp-live", "out"]
        assert "note: removed " + str(dead) in capsys.readouterr().err
        (tmp_path / ".out.old-dead").mkdir()  # replaced by a write killed before it removed the old folder
        with publish_dir(tmp_path / "out", overwrite=True) as tmp:
            (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-dead", "out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.txt"]


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder nor a run folder"):
        find_checkpoint(tmp_path)


def _electra(*args):
    return subprocess.run([sys.executable, "-m", "electra", *args], capture_output=True, text=True)


def test_cli_export_of_a_run_loads_in_transformers(tmp_path, tokenizer, tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    model = perturb(Electra(tiny(vocab_size=tokenizer.get_vocab_size())))
    save_checkpoint(step_dir(tmp_path / "run", 5), model, tokenizer_dir=tokenizer_dir)
    result = _electra(
        "export", str(tmp_path / "run"), "--out", str(tmp_path / "disc"), "--generator-out", str(tmp_path / "gen")
    )
    assert result.returncode == 0, result.stderr
    assert "step-00000005" in result.stdout
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "disc").eval()
    ids, types, mask = batch(tokenizer.get_vocab_size())
    with torch.no_grad():
        ours = model.discriminator_logits(ids, types, mask)
        theirs = disc(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], rtol=0, atol=1e-5)
    fill = transformers.pipeline("fill-mask", model=str(tmp_path / "gen"))
    assert len(fill("the movie was [MASK] .")) == 5
    assert json.loads((tmp_path / "disc" / "tokenizer_config.json").read_text())["do_lower_case"] is True


def test_cli_export_writes_both_folders_or_neither(tmp_path, cli, monkeypatch):
    from electra import hf

    save_checkpoint(tmp_path / "ckpt", Electra(tiny()))
    to_hf_state = hf.to_hf_state

    def failing(state, kind, cfg):  # the generator's weights cannot be written (a full disk, say)
        if kind == "generator":
            raise OSError(28, "No space left on device")
        return to_hf_state(state, kind, cfg)

    export = ["export", tmp_path / "ckpt", "--out", tmp_path / "disc", "--generator-out", tmp_path / "gen"]
    with monkeypatch.context() as patched:
        patched.setattr(hf, "to_hf_state", failing)
        result = cli(*export)
    assert result.returncode != 0 and "No space left on device" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the discriminator was not published alone
    result = cli(*export)  # so the same command, run again, does it all
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "disc" / "model.safetensors").is_file() and (tmp_path / "gen" / "model.safetensors").is_file()


def test_cli_export_killed_between_its_two_renames_runs_again_as_it_is(tmp_path, cli, monkeypatch):
    save_checkpoint(tmp_path / "ckpt", Electra(tiny()))
    rename = os.rename

    class Killed(BaseException):
        pass

    def killed(src, dst):  # kill -9 once the generator's folder is in place, before the discriminator's
        if ".disc.tmp-" in str(src):
            raise Killed
        rename(src, dst)

    export = ["export", tmp_path / "ckpt", "--out", tmp_path / "disc", "--generator-out", tmp_path / "gen"]
    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(os, "rename", killed)
        cli(*export)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "gen"]
    result = cli(*export)  # the generator published alone is removed, and both are written
    assert result.returncode == 0, result.stderr
    assert f"note: removed {tmp_path / 'gen'}, published by an interrupted write" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "disc", "gen"]
    assert not list((tmp_path / "disc").glob(".*")) and not list((tmp_path / "gen").glob(".*"))
    assert cli(*export).returncode == 2  # a complete export is kept, as before

    from electra import atomic

    fsync_dir = atomic._fsync_dir

    def killed_at(n):  # kill -9 at the n-th folder sync: 2, after both renames; 3, once the first mark is removed
        calls = []

        def sync(path):
            calls.append(path)
            if len(calls) == n:
                raise Killed
            fsync_dir(path)

        return sync

    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(atomic, "_fsync_dir", killed_at(3))
        cli(*export, "--force")
    assert [len(list(tmp_path.glob(f"{name}/.*"))) for name in ("disc", "gen")] == [1, 0]
    result = cli(*export)  # both are in place: only the mark goes, and the export is complete
    assert result.returncode == 2 and "already holds files" in result.stderr
    assert not list((tmp_path / "disc").glob(".*")) and (tmp_path / "disc" / "model.safetensors").is_file()
    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(atomic, "_fsync_dir", killed_at(2))
        cli(*export, "--force")
    assert cli(*export).returncode == 2  # both in place: complete, and both marks are gone
    assert not list(tmp_path.glob("*/.unfinished"))


def test_cli_export_refuses_bad_input_with_a_message(tmp_path, cli):
    result = cli("export", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    save_checkpoint(tmp_path / "ckpt", Electra(tiny()))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    result = cli("export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "busy"))
    assert result.returncode == 2 and "--force" in result.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["file"]
    e = str(tmp_path / "e")
    result = cli("export", str(tmp_path / "ckpt"), "--out", e, "--generator-out", e + "/gen")
    assert result.returncode == 2 and "two separate folders" in result.stderr
    result = cli("export", str(tmp_path / "ckpt"), "--out", e, "--generator-out", str(tmp_path / "busy"))
    assert result.returncode == 2 and "--force" in result.stderr and not (tmp_path / "e").exists()  # checked first
    (tmp_path / "notes.txt").write_text("x")  # a second output below a file, or where nothing can be created
    for where, message in [(tmp_path / "notes.txt" / "gen", "notes.txt is a file, not a folder"), ("/proc/gen", "")]:
        result = cli("export", str(tmp_path / "ckpt"), "--out", e, "--generator-out", where)
        assert result.returncode == 2 and "Traceback" not in result.stderr and message in result.stderr
        assert not (tmp_path / "e").exists()  # found before the first folder was written
    result = cli("export", str(tmp_path / "ckpt"), "--out", str(tmp_path), "--force")
    assert result.returncode == 2 and "would replace that input" in result.stderr
    big = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(200))]  # 205 tokens for a 100-entry embedding
    save_tokenizer(from_vocab(big), tmp_path / "big")
    result = cli("export", str(tmp_path / "ckpt"), "--out", e, "--tokenizer", str(tmp_path / "big"))
    assert result.returncode == 2 and "205 tokens but the model's embeddings 100" in result.stderr
    assert not (tmp_path / "e").exists()
    assert (tmp_path / "ckpt" / "model.safetensors").exists()


def test_cli_export_refuses_a_tokenizer_other_than_the_runs(tmp_path, cli):
    vocab = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(40))]
    save_tokenizer(from_vocab(vocab), tmp_path / "own")
    save_checkpoint(tmp_path / "ckpt", Electra(tiny(vocab_size=len(vocab))), tokenizer_dir=tmp_path / "own")
    save_tokenizer(from_vocab(vocab, lowercase=False), tmp_path / "cased")  # the same ids, text read otherwise
    save_tokenizer(from_vocab(vocab, strip_accents=False), tmp_path / "accents")
    save_tokenizer(from_vocab(vocab[:-1] + ["x"]), tmp_path / "other")
    for given, message in [
        ("other", "other ids for the same tokens"),
        ("cased", "keeps case and accents; the run's tokenizer lowercases and strips accents"),
        ("accents", "lowercases but keeps accents; the run's tokenizer lowercases and strips accents"),
    ]:
        result = cli("export", tmp_path / "ckpt", "--out", tmp_path / "e", "--tokenizer", tmp_path / given)
        assert result.returncode == 2 and message in result.stderr and not (tmp_path / "e").exists()
    assert cli("export", tmp_path / "ckpt", "--out", tmp_path / "e", "--tokenizer", tmp_path / "own").returncode == 0
    save_tokenizer(from_vocab(vocab, strip_accents=True), tmp_path / "said")  # what lowercasing does unasked
    assert (
        cli(
            "export", tmp_path / "ckpt", "--out", tmp_path / "e", "--tokenizer", tmp_path / "said", "--force"
        ).returncode
        == 0
    )


def test_cli_help_lists_the_public_subcommands(cli):
    result = cli("--help")
    assert result.returncode == 0
    for name in (
        "prepare",
        "pretrain",
        "export",
        "finetune",
        "evaluate",
        "predict",
        "embed",
        "serve",
        "quickstart",
        "report",
    ):
        assert name in result.stdout


class NotATensor:  # any class: a pickle that names it can name any callable
    pass


def test_a_train_state_that_would_run_code_is_refused_not_unpickled(tmp_path):
    save_checkpoint(step_dir(tmp_path, 1), Electra(tiny()), train_state={"step": 1, "x": NotATensor()})
    with pytest.raises(ValueError, match="is damaged"):
        load_checkpoint(tmp_path, with_train_state=True)


def test_publishing_fsyncs_every_file_before_the_rename_and_the_folder_after_it(tmp_path, monkeypatch):
    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with publish_dir(tmp_path / "out") as tmp:
        (tmp / "a.bin").write_bytes(b"x")
    assert any(p.endswith("a.bin") and ".tmp-" in p for p in synced)  # the bytes, before the rename
    assert synced[-1] == str(tmp_path)  # the rename itself, after it
    synced.clear()
    with publishing_file(tmp_path / "f.txt") as f:
        f.write("x")
    assert any(".f.txt.tmp-" in p for p in synced)


def test_replacing_a_folder_leaves_no_old_copy_beside_it(tmp_path):
    for text in ("old", "new"):
        with publish_dir(tmp_path / "out", overwrite=True) as tmp:
            (tmp / "a.txt").write_text(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "a.txt").read_text() == "new"


def test_a_train_state_changed_since_it_was_saved_is_named_when_resuming(tmp_path):
    save_checkpoint(step_dir(tmp_path, 1), Electra(tiny()), train_state={"step": 1, "t": torch.zeros(8)})
    torch.save({"step": 1, "t": torch.ones(8)}, step_dir(tmp_path, 1) / "train_state.pt")  # still loads
    with pytest.raises(ValueError, match=r"train_state.pt changed since it was saved"):
        load_checkpoint(tmp_path, with_train_state=True)
    assert load_checkpoint(tmp_path).train_state is None  # the weights alone still load (export)


def test_a_step_folder_without_weights_is_passed_over_for_the_one_before(tmp_path, capsys):
    save_checkpoint(step_dir(tmp_path, 2), Electra(tiny()))
    step_dir(tmp_path, 3).mkdir()
    shutil.copy(step_dir(tmp_path, 2) / "config.json", step_dir(tmp_path, 3) / "config.json")  # weights lost
    assert load_checkpoint(tmp_path).path == step_dir(tmp_path, 2)
    assert "step-00000003 is newer but not a complete checkpoint (no model.safetensors)" in capsys.readouterr().err


def test_a_config_edit_that_adds_or_drops_tensors_is_refused_not_filled_in(tmp_path):
    save_checkpoint(step_dir(tmp_path, 1), Electra(tiny()))
    config = step_dir(tmp_path, 1) / "config.json"
    record = json.loads(config.read_text())
    record["model"]["discriminator_lm_head"] = True  # a head the file does not hold: it would stay random
    config.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"model.safetensors does not fit config.json's \"model\" record"):
        load_checkpoint(tmp_path)


def test_a_published_file_is_replaced_by_a_rename_never_rewritten_in_place(tmp_path):
    target = tmp_path / "metrics.jsonl"
    publish_file(target, "old\n")
    inode = target.stat().st_ino
    with publishing_file(target) as f:
        f.write("new\n")
        assert target.read_text() == "old\n"  # readers see the old file while the new one is written
    assert target.read_text() == "new\n" and target.stat().st_ino != inode  # a new file renamed over it


def test_a_forced_output_that_holds_the_current_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    for target in (tmp_path / "a" / "b", tmp_path / "a"):  # replacing it would delete the folder we are in
        with (
            pytest.raises(OutputExistsError, match="is the current folder or holds it"),
            publish_dir(target, overwrite=True),
        ):
            pass
    assert (tmp_path / "a" / "b").is_dir()


def test_a_folder_of_another_format_is_not_taken_for_a_checkpoint(tmp_path, capsys, monkeypatch):
    """A transformers folder (config.json + model.safetensors) is not a checkpoint of ours; only
    folders newer than the one chosen are noted."""
    save_checkpoint(step_dir(tmp_path, 1), Electra(tiny()))
    older, other = step_dir(tmp_path, 0), step_dir(tmp_path, 2)
    older.mkdir()
    (older / "config.json").write_text("{")  # cut short before step 1: nothing to say of it
    shutil.copytree(step_dir(tmp_path, 1), other)
    (other / "config.json").write_text(json.dumps({"model_type": "electra", "format": "hf"}))
    assert find_checkpoint(tmp_path) == step_dir(tmp_path, 1)
    assert capsys.readouterr().err == (
        f"note: {other} is newer but not a complete checkpoint "
        "(config.json is not an electra-checkpoint-v1 record); using step-00000001\n"
    )
    with pytest.raises(FileNotFoundError, match="is neither a checkpoint folder nor a run folder"):
        find_checkpoint(other)
    monkeypatch.setenv("RANK", "1")  # under torchrun the note is rank 0's alone
    assert find_checkpoint(tmp_path) == step_dir(tmp_path, 1) and capsys.readouterr().err == ""


def test_pruning_takes_a_checkpoint_out_of_sight_before_deleting_its_files(tmp_path, monkeypatch):
    """A reader never sees a checkpoint half deleted: it is gone from the listing before its files go."""
    for step in (1, 2):
        save_checkpoint(step_dir(tmp_path, step), Electra(tiny()))
    listed, real = [], shutil.rmtree

    def rmtree(path, *args, **kwargs):
        listed.append([p.name for p in list_checkpoints(tmp_path)])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    prune_checkpoints(tmp_path, keep=1)
    assert listed == [["step-00000002"]]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002"]


def test_a_write_killed_before_it_held_its_work_folder_leaves_nothing_for_good(tmp_path, monkeypatch, capsys):
    from electra.atomic import check_writable

    def killed(*args):  # kill -9 after the work folder was made, before it was renamed and held
        raise SystemExit(137)

    monkeypatch.setattr(os, "rename", killed)
    with pytest.raises(SystemExit), publish_dir(tmp_path / "out"):
        pass
    monkeypatch.setattr(os, "rmdir", killed)  # and after the probe for a writable folder made its own
    with contextlib.suppress(SystemExit):
        check_writable(tmp_path / "next")
    monkeypatch.undo()
    [made] = [p for p in tmp_path.iterdir()]
    made.rename(made.with_name(made.name.replace(f".new-{os.getpid()}-", ".new-999999999-")))  # its maker ended
    (tmp_path / ".out.json.new-999999999-0123abcd").write_text("{")  # a file's, left the same way
    (tmp_path / f".out.json.new-{os.getpid()}-live").touch()  # a live writer's, about to take hold of it
    with publish_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a")
    publish_file(tmp_path / "out.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.json.new-{os.getpid()}-live", "out", "out.json"]
    assert capsys.readouterr().err.count("left behind by an interrupted write") == 2
