"""Films -> training datasets (`cinema data`): shots, keyframes, filters, captions,
multi-shot samples and shards, for the keyframe model (Captain Cinema) and multi-shot
video (HoloCine).

The dataset folder:

    DATASET/
      dataset.yaml          settings (written by prepare, editable; flags override)
      cast.yaml             the cast captions may tag (from --cast)
      manifest.json         per film: source path, size, mtime, sha256, probe, state
                            (done / pending / failed + why), counts, step recipe hashes
      films/ID/             per-film work, one JSON per step, each {"recipe", "data"}:
        boundaries.json     shots: start/end frame and second, "after": cut|dissolve|end
        frames.json         + picture box (inside bars), 2:1 crop box (source pixels),
                            keyframe path and sha256, luma / detail / contrast
        keyframes/NNNNNN.jpg  every shot's cropped middle frame (dropped ones too)
        subtitles.json      subtitle-like text boxes per shot
        filters.json        per shot: reasons, kept, video_ok, duplicate_of
        captions.json       per shot caption + characters (and pending ones, why)
        samples.json        multi-shot samples
        shards.json         the shard names this film published
      shards/keyframes/ID-NNNNN.tar  WebDataset: KEY.jpg, KEY.json (the record), KEY.txt
      shards/multishot/ID-NNNNN.tar  WebDataset: KEY.json (shots, cuts, captions)
      show/                 contact sheets and index.html (`cinema data show`)
      .cinema/lock, .cinema/tmp/

Only kept shots reach shards/keyframes; video samples use the shots that are fine for
video (a near-duplicate keyframe is). Clips are time ranges into the source film, not
re-encoded copies. Read a dataset with `cinema_cli.data.reader.Dataset`.
"""
