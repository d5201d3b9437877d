"""The trainer's live memory (issue 18.2): keyframes folded into a memory as they arrive.

The trainer node's subscription only hands a recording id to :meth:`LiveWorker.submit` (never
blocks); ONE worker thread folds every keyframe of that recording it has not folded yet into
the recording's :class:`~m3_core.live.LiveMemory` (so a restarted trainer rebuilds it from the
keyframes on disk). A keyframe's features are the recording's precomputed maps
(``features/<name>/<stem>.npy``), else extracted with the registry extractor on the trainer's
device from the image as recorded (not at ``max_image_size``, as ``m3 train``) and stored
there (a later ``TrainMemory`` reuses them). Every ``publish_every`` folded keyframes, and
when the stream has paused for ``idle_publish_s`` with keyframes not yet published, a snapshot
is saved into ``memories_dir/<recording>/live`` (written beside, then renamed over the
previous one) and announced like a trained memory (as ``<recording>.live``). Keyframes are
folded in recording order (:meth:`LiveWorker._update`), and each snapshot's relevancy
temperatures are fitted on its latest keyframes as training fits a trained memory's, so a
live score means what a trained one means.

Once the recording has a trained memory (``memories_dir/<recording>/memory.json``, or the
output of a ``TrainMemory`` run the trainer hands to :meth:`LiveWorker.trained`), the two are
scored on held-out keyframes and only the better one is announced (:mod:`m3_core.live.choose`:
the recording's test views are never folded; the most recent ``compare_frames`` of them that
neither memory was built from are rendered, and the mean feature 1 - cos decides, else PSNR):
a live snapshot is announced only while it measures better, and the trained memory is
announced again when it does. Each decision is logged with both numbers. The trained memory's
score is kept until its ``memory.json`` or the held-out keyframes change.
A keyframe that cannot be folded is logged and skipped; the node keeps running.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from m3_core.errors import InvalidInputError, M3Error
from m3_core.io import make_temp_dir
from m3_core.live import LiveConfig, LiveMemory, keyframe_from_dataset
from m3_core.live.choose import LIVE, TRAINED, Decision, Score


@dataclass
class LiveRecording:
    memory: LiveMemory | None = None  # created from the first keyframe's features
    tried: set[str] = field(default_factory=set)  # frame names folded, refused or held out
    unpublished: int = 0  # keyframes folded since the last snapshot
    trained: Path | None = None  # the trained memory the trainer handed over (this run)
    serving: str = ""  # what this worker last announced: LIVE | TRAINED | "" (nothing yet)
    trained_score: tuple[tuple, Score] | None = None  # (memory.json mtime, held out), score


def replace_folder(staging: Path, dest: Path) -> None:
    """Rename ``staging`` onto ``dest`` (the old ``dest`` is moved aside, then deleted)."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


class LiveWorker:
    """Queue of recording ids -> one thread -> live memories -> announced snapshots."""

    def __init__(
        self,
        recordings_dir: str | Path,
        memories_dir: str | Path,
        features: list[str],
        notify: Callable[[str, str], None],  # (memory folder, announced name)
        logger,
        *,
        publish_every: int = 5,
        idle_publish_s: float = 3.0,
        device: str = "cpu",
        weights_dir: str | None = None,
        max_image_size: tuple[int, int] | None = None,
        config: LiveConfig | None = None,
        compare_frames: int = 4,
        calibration_frames: int = 8,
    ) -> None:
        if publish_every < 1 or not features or compare_frames < 0:
            raise InvalidInputError(
                "live_publish_every must be >= 1, live_features non-empty and compare_frames >= 0"
            )
        self.recordings = Path(recordings_dir).expanduser()
        self.memories = Path(memories_dir).expanduser()
        from m3_core.train import FeatureSpec

        self.specs = [FeatureSpec.parse(text) for text in features]  # name[:channels[:thr]]
        self.features = [s.name for s in self.specs]
        self.notify, self.logger = notify, logger
        self.publish_every, self.idle_publish_s = publish_every, idle_publish_s
        self.device, self.weights_dir = device, weights_dir
        self.max_size, self.config = max_image_size, config
        self.compare_frames, self.calibration_frames = compare_frames, calibration_frames
        self.recs: dict[str, LiveRecording] = {}
        self.extractors: dict[str, object] = {}
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="live_memory", daemon=True)
        self.thread.start()

    def submit(self, recording_id: str) -> None:
        """A keyframe of ``recording_id`` was written (cheap; called from the DDS callback)."""
        self.jobs.put(recording_id)

    def trained(self, recording_id: str, path: str | Path) -> None:
        """A TrainMemory run of ``recording_id`` finished into ``path``: the worker announces
        it, or keeps the live snapshot when that measures better (module doc)."""
        self.jobs.put((recording_id, Path(path)))

    def close(self, timeout: float = 10.0) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=timeout)

    # -- the worker thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                rec = self.jobs.get(timeout=self.idle_publish_s)
            except queue.Empty:  # the stream paused: publish what is not published yet
                for rec_id, state in self.recs.items():
                    if state.unpublished:
                        self._guard(self._publish, rec_id, state)
                continue
            batch = [rec]
            while True:  # coalesce the jobs queued meanwhile
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            if any(job is None for job in batch):
                return
            for rec_id in sorted({job for job in batch if isinstance(job, str)}):
                self._guard(self._update, rec_id)
            for job in batch:
                if isinstance(job, tuple):  # (recording, trained memory): after the folds
                    self._guard(self._on_trained, *job)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except M3Error as exc:
            self.logger.warning(f"live memory: {exc}")
        except Exception:  # a bug must not stop the worker (nor the node)
            self.logger.error(f"live memory failed:\n{traceback.format_exc()}")

    def _update(self, rec_id: str) -> None:
        """Fold every keyframe of the recording not tried yet, except its test views (held
        out: the trained and the live memory are compared on them); publish every N.

        In recording order, whatever the arrival timing, so the live memory a walk gives
        does not depend on how fast its keyframes came. (Newest-first folding was tried: it
        let the demo answer sooner while keyframes arrived faster than they fold, but the
        memory then depended on the arrival timing, and a small object of the tests' room
        was lost in some orders.)"""
        from m3_core.data import load_dataset

        state = self.recs.setdefault(rec_id, LiveRecording())
        dataset = load_dataset(self.recordings / rec_id, max_size=self.max_size)
        test = set(dataset.test_indices)
        for i, frame in enumerate(dataset.frames):
            if frame.name in state.tried:
                continue
            state.tried.add(frame.name)
            if i in test:
                continue
            try:
                self._fold(dataset, i, state)
            except M3Error as exc:
                self.logger.warning(f"live memory skipped keyframe {frame.name!r}: {exc}")
                continue
            state.unpublished += 1
            if state.unpublished >= self.publish_every:
                self._publish(rec_id, state)

    def _fold(self, dataset, i: int, state: LiveRecording) -> None:
        for name in self.features:
            self._ensure_features(dataset, i, name)
        frame = keyframe_from_dataset(dataset, i, self.features)
        if state.memory is None:
            state.memory = self._new_memory(frame, dataset.world_frame)
        stats = state.memory.add_keyframe(frame)
        seconds = sum(v for k, v in stats.items() if k.endswith("_s"))
        self.logger.info(
            f"live memory {dataset.root.name}: keyframe {frame.name} folded in {seconds:.2f} s "
            f"({stats['gaussians']} Gaussians)"
        )

    def _new_memory(self, frame, world_frame: str) -> LiveMemory:
        from m3_core.config import MemoryConfig
        from m3_core.types import ModelSpec

        specs = []
        for spec in self.specs:
            channels, threshold = spec.resolved()
            dim = int(frame.features[spec.name].shape[-1])
            specs.append(ModelSpec(spec.name, dim, channels, threshold))
        config = MemoryConfig(models=specs, sh_degree=0)
        return LiveMemory(config, self.config, world_frame=world_frame)

    def _ensure_features(self, dataset, i: int, name: str) -> None:
        """The frame's map of feature ``name`` on disk: precomputed, else extracted here."""
        from m3_core.data.features import FeatureStore
        from m3_core.extractors import list_extractors

        store = FeatureStore(dataset.root, name)
        stem = dataset.frames[i].image_path.stem
        if store.exists(stem):
            return
        if name not in set(list_extractors()) - {"precomputed"}:
            raise InvalidInputError(
                f"no {name!r} features for it in {store.dir} and no extractor of that name"
            )
        from m3_core.data import load_dataset

        extractor = self.extractors.get(name) or self._extractor(name, store)
        recorded = load_dataset(dataset.root)  # as recorded, not at max_image_size (as m3 train)
        image = recorded.load_image(recorded.index_of(dataset.frames[i].name))
        images = image.permute(2, 0, 1)[None]  # [1, 3, H, W]
        grid = extractor.encode_image(images)[0].permute(1, 2, 0)  # [h, w, D]
        store.save(stem, grid.to(torch.float16).cpu().numpy())

    def _extractor(self, name: str, store):
        """Create (once) the extractor ``name``; its meta/vocabulary go beside the maps as
        ``m3 extract`` writes them, so training and text queries use the same features."""
        from m3_core.extractors import create_extractor

        weights = None
        if self.weights_dir and (Path(self.weights_dir) / name).exists():
            weights = str(Path(self.weights_dir) / name)
        extractor = create_extractor(name, weights=weights, device=self.device)
        if store.meta() is None:
            store.save_meta({**extractor.meta(), "options": {}})
        vocab = extractor.vocabulary()
        if vocab and store.vocabulary() is None:
            store.save_vocabulary(vocab, extractor.encode_text(vocab).cpu())
        self.extractors[name] = extractor
        return extractor

    def _publish(self, rec_id: str, state: LiveRecording) -> None:
        """Save the snapshot into memories_dir/<rec>/live (atomically) and announce the better
        of it and the trained memory."""
        state.unpublished = 0
        if state.memory is None:
            return
        dest = self.memories / rec_id / "live"
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(dest.parent, ".live.")
        feature_dirs = {n: self.recordings / rec_id / "features" / n for n in self.features}
        try:
            snapshot = state.memory.snapshot()  # one copy: calibrated, then written
            temps = self._temperatures(rec_id, state, snapshot)
            state.memory.save(
                staging, feature_dirs=feature_dirs, temperatures=temps, snapshot=snapshot
            )
            replace_folder(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        n = len(state.memory.frames)
        self.logger.info(f"live memory {rec_id}: snapshot of {n} keyframes at {dest}")
        self._announce(rec_id, state)

    def _temperatures(self, rec_id: str, state: LiveRecording, memory) -> dict[str, float]:
        """Relevancy temperatures of the snapshot, fitted on its latest ``calibration_frames``
        keyframes against their real feature maps (as the trainer fits a trained memory's on
        its training views), so that live and trained scores mean the same."""
        from m3_core.data import load_dataset
        from m3_core.data.features import FeatureStore
        from m3_core.memory.grounding import fit_temperatures

        dataset = load_dataset(self.recordings / rec_id, max_size=self.max_size)
        names = state.memory.frames[-self.calibration_frames :]
        ids = [dataset.index_of(n) for n in names]
        calibration = {}
        for name in self.features:
            store = FeatureStore(dataset.root, name)
            vocab = store.vocabulary()
            if vocab is not None:
                grids = [store.load(dataset.frames[i].name) if store.exists(
                    dataset.frames[i].name) else None for i in ids]  # fmt: skip
                calibration[name] = (vocab[1], grids)
        if not calibration or not ids:
            return {}
        return fit_temperatures(memory, [dataset.frames[i].camera for i in ids], calibration)

    def _on_trained(self, rec_id: str, path: Path) -> None:
        state = self.recs.setdefault(rec_id, LiveRecording())
        state.trained, state.serving, state.trained_score = path, "", None
        if state.memory is not None and state.unpublished:
            self._publish(rec_id, state)  # the snapshot compared is the one announced
        else:
            self._announce(rec_id, state)

    def _trained_path(self, rec_id: str, state: LiveRecording) -> Path | None:
        """The recording's trained memory: the trainer's last output, else the default
        ``memories_dir/<rec>`` (also after a restart); None while there is none."""
        path = state.trained or self.memories / rec_id
        return path if (path / "memory.json").is_file() else None

    def _announce(self, rec_id: str, state: LiveRecording) -> None:
        """Announce the live snapshot while no trained memory exists or while it measures
        better on held-out keyframes; else the trained memory (once)."""
        live_dir = self.memories / rec_id / "live"
        has_live = state.memory is not None and (live_dir / "memory.json").is_file()
        trained = self._trained_path(rec_id, state)
        if trained is None:
            if has_live:
                self.notify(str(live_dir), f"{rec_id}.live")
                state.serving = LIVE
            return
        serve = TRAINED
        if has_live:
            decision = self._decide(rec_id, state, trained)
            self.logger.info(f"live memory {rec_id}: {decision}")
            serve = decision.serve
        if serve == LIVE:
            self.notify(str(live_dir), f"{rec_id}.live")
        elif state.serving != TRAINED:
            self.notify(str(trained), "")
        state.serving = serve

    def _decide(self, rec_id: str, state: LiveRecording, trained: Path) -> Decision:
        """Score both memories on the held-out keyframes (:mod:`m3_core.live.choose`)."""
        from m3_core.data import load_dataset
        from m3_core.live.choose import choose, held_out_frames, score_memory
        from m3_core.memory import Memory
        from m3_core.train.trainer import resolve_device

        dataset = load_dataset(self.recordings / rec_id, max_size=self.max_size)
        meta_file = trained / "memory.json"
        try:
            trained_frames = json.loads(meta_file.read_text())["extra"].get("frames", [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"cannot read the trained memory {trained}: {exc}") from None
        if not isinstance(trained_frames, list):
            raise InvalidInputError(f"{meta_file}: extra.frames must be a list of frame names")
        test = [dataset.frames[i].name for i in dataset.test_indices]
        names = held_out_frames(test, trained_frames, state.memory.frames, self.compare_frames)
        ids = [dataset.index_of(n) for n in names]
        for i in ids:  # the live memory's features of the held-out views (for 1 - cos)
            for name in self.features:
                try:
                    self._ensure_features(dataset, i, name)
                except M3Error:
                    pass  # that feature is not compared on this view
        device = resolve_device(self.device)
        key = (str(trained), meta_file.stat().st_mtime_ns, tuple(names))
        if state.trained_score is not None and state.trained_score[0] == key:
            old = state.trained_score[1]
        else:
            memory = Memory.load(trained, device) if ids else None
            old = score_memory(memory, dataset, ids) if ids else Score(0)
            state.trained_score = (key, old)
        new = score_memory(state.memory.snapshot(device=device), dataset, ids) if ids else Score(0)
        self.logger.info(
            f"live memory {rec_id}: held-out keyframes {names}: PSNR live {new.psnr:.2f} dB, "
            f"trained {old.psnr:.2f} dB"
        )
        return choose(old, new)
