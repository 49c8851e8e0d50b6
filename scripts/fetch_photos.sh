#!/usr/bin/env bash
# fetch_photos.sh [OUT_DIR]: real photographs for backgrounds, distractors and negative frames
# (issue 16), from Debian packages, into OUT_DIR (default data/photos, git-ignored).
#
# * `apt-get download` the packages below (no root install; `apt-get update` first when the
#   package lists are empty), `dpkg-deb` extracts only their images and copyright files;
# * keeps photographs only: a hand-picked list of photographic desktop backgrounds (no drawings,
#   no cups, glasses, bottles or bowls in them), OpenCV's sample photographs, GIMP's photographic
#   texture patterns (tiled to 1024 x 768) and the photographic Tux Paint stamps (RGBA
#   cut-outs; drawings are left out by a flat-colour test, container-like objects by their
#   English description);
# * writes backgrounds/*.jpg (longest side <= 1280 px), cutouts/*.png (RGBA, cropped to the
#   alpha, longest side <= 320 px) and index.json (file, package, version, source, licence,
#   copyright, kind: cutout | background, split: train | val by a fixed hash of the file name,
#   ~20 % val). Licences come from each package's /usr/share/doc/<package>/copyright (machine-
#   readable stanzas; Plasma wallpapers: their metadata.json). docs/data.md lists the sources.
# Idempotent: does nothing when OUT_DIR/index.json exists (FORCE=1 rebuilds). Needs ~450 MB of
# downloads and ~1 GB of temporary disk (removed afterwards); the result is ~30 MB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/data/photos}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
PACKAGES=(tuxpaint-stamps-default mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
          plasma-workspace-wallpapers opencv-doc gimp-data)

if [ -f "$OUT/index.json" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "fetch_photos: $OUT/index.json exists (FORCE=1 rebuilds)"
    exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
    echo "fetch_photos: needs apt-get and dpkg-deb (a Debian/Ubuntu system)" >&2; exit 1; }

# Package lists: `apt-get update` only when a package has no download candidate.
candidates() { local p policy; for p in "${PACKAGES[@]}"; do
    policy="$(apt-cache policy "$p" 2>/dev/null)"; [[ "$policy" == *"Candidate: "[^\(]* ]] || return 1; done; }
if ! candidates; then
    echo "fetch_photos: package lists incomplete, running apt-get update"
    apt-get update -qq || { echo "fetch_photos: apt-get update failed (run it as root once)" >&2; exit 1; }
    candidates || { echo "fetch_photos: not in this system's Debian archive: ${PACKAGES[*]}" >&2; exit 1; }
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fetch_photos.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/debs" "$WORK/raw"
(cd "$WORK/debs" && apt-get download "${PACKAGES[@]}")
for deb in "$WORK"/debs/*.deb; do
    pkg="$(dpkg-deb -f "$deb" Package)"
    ver="$(dpkg-deb -f "$deb" Version)"
    mkdir -p "$WORK/raw/$pkg"
    echo "$ver" > "$WORK/raw/$pkg/VERSION"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$WORK/raw/$pkg" --wildcards --no-anchored \
        '*.png' '*.jpg' '*.pat' '*.txt' '*/copyright' '*/metadata.json' 2>/dev/null || true
    rm -f "$deb"
done

"$PY" - "$WORK/raw" "$OUT" <<'PYEOF'
import fnmatch, glob, hashlib, json, os, re, sys
import cv2
import numpy as np

RAW, OUT = sys.argv[1], sys.argv[2]
# Photographic backgrounds without containers (drawings, cups, bottles, bowls, jars left out).
BACKGROUNDS = {
    "mate-backgrounds": ["*/nature/%s.jpg" % n for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
        "Storm", "TwoWings", "Wood", "YellowFlower")],
    "lomiri-wallpapers-16.04": ["*/%s_by_*.jpg" % n for n in (
        "Bridge", "Dragonfly", "aitzgorri", "free", "friends", "greentock", "life", "picosdeeuropa",
        "seeding", "sunset")],
    "lomiri-wallpapers-20.04": ["*/Kleiber_by_*.jpg", "*/Infinite-Sea_by_*.jpg"],
    "plasma-workspace-wallpapers": ["*/wallpapers/%s/contents/images/*" % n for n in (
        "BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "Volna", "summer_1am")],
    # OpenCV's sample photographs (one of each stereo / view pair; no pots, jars or bottles)
    "opencv-doc": ["*/examples/data/%s" % n for n in (
        "aero1.jpg", "aero3.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg", "box.png",
        "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png", "fruits.jpg", "graf1.png",
        "home.jpg", "left.jpg", "left01.jpg", "leuvenA.jpg", "licenseplate_motion.jpg", "messi5.jpg",
        "orange.jpg", "rubberwhale1.png", "squirrel_cls.jpg", "sudoku.png")]
    + ["*/examples/hfs/data/001.jpg", "*/examples/hfs/data/002.jpg", "*/examples/reg/home.png",
       "*/examples/dnn_superres/butterfly.png"],
}
# GIMP's photographic texture patterns (.pat tiles of 50-156 px: wood, stone, fabric, ...), tiled.
TEXTURE_PACKAGE = "gimp-data"
TEXTURES = ["Fabric/burlap", "Food/java", "Paper/crinklepaper", "Plant/leaves", "Stone/brick", "Stone/cracked",
            "Stone/granite1", "Stone/ground1", "Stone/marble1", "Stone/rock", "Stone/slate", "Stone/stone33",
            "Wood/bark", "Wood/corkboard", "Wood/parque1", "Wood/walnut", "Wood/wood3", "Wood/wood5"]
TEXTURE_SIZE = (1024, 768)
CUTOUT_PACKAGE = "tuxpaint-stamps-default"
# Stamps whose English description names a container-like object are never negatives.
CONTAINER_WORDS = re.compile(r"\b(cups?|mugs?|glass(es)?|bottles?|jars?|jugs?|pitchers?|teapots?|kettles?|"
                             r"vases?|bowls?|buckets?|pots?|cans?|beakers?|goblets?|wine|beer|tumblers?|"
                             r"chalices?|cauldrons?|urns?|barrels?|bins?)\b", re.I)
VAL_PERCENT = 20


def split_of(name):
    return "val" if int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 100 < VAL_PERCENT else "train"


def dep5(pkg):
    """[(patterns, copyright, licence)] of the package's machine-readable copyright file."""
    path = glob.glob(os.path.join(RAW, pkg, "usr/share/doc/*/copyright"))
    stanzas, text = [], open(path[0], encoding="utf-8", errors="replace").read() if path else ""
    for block in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in block.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                key = m.group(1).lower()
                fields[key] = m.group(2).strip()
            elif key and line.startswith((" ", "\t")):
                fields[key] += " " + line.strip()
        if "files" in fields:
            stanzas.append((fields["files"].split(), fields.get("copyright", ""),
                            fields.get("license", "").split(" ")[0] if fields.get("license") else ""))
    return stanzas


# Installed paths whose source path is known: matched exactly against the copyright's stanzas.
SOURCE_PATHS = {"opencv-doc": ("usr/share/doc/opencv-doc/examples/", "samples/")}


def licence_of(pkg, src):
    """(licence, copyright) of ``src`` (path inside the package): last matching stanza wins."""
    found = ("see /usr/share/doc/%s/copyright" % pkg, "")
    installed, source = SOURCE_PATHS.get(pkg, (None, None))
    exact = source + src[len(installed):] if installed and src.startswith(installed) else None
    for patterns, holder, lic in dep5(pkg):
        if exact is not None:
            hit = any(fnmatch.fnmatch(exact, p) for p in patterns)
        else:
            hit = any(p == "*" or fnmatch.fnmatch(src, "*" + p.lstrip("*"))
                      or ("*" not in p and os.path.basename(p) == os.path.basename(src)) for p in patterns)
        if lic and hit:
            found = (lic, holder)
    meta = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.join(RAW, pkg, src)))),
                        "metadata.json")  # wallpapers/<name>/contents/images/<file>
    if pkg == "plasma-workspace-wallpapers" and os.path.exists(meta):
        plugin = json.load(open(meta)).get("KPlugin", {})
        authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []))
        found = (plugin.get("License", found[0]), authors or found[1])
    return found


def entry(pkg, src, kind, file, img):
    version = open(os.path.join(RAW, pkg, "VERSION")).read().strip()
    lic, holder = licence_of(pkg, src)
    return {"file": file, "kind": kind, "split": split_of(os.path.basename(file)), "package": pkg,
            "version": version, "source": "/" + src, "licence": lic, "copyright": holder,
            "width": int(img.shape[1]), "height": int(img.shape[0])}


def fit(img, longest):
    s = longest / max(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA) \
        if s < 1 else img


def save_background(pkg, src, stem, img):
    """Write ``img`` as backgrounds/<pkg>__<stem>.jpg (the name the split is drawn from); its index entry."""
    os.makedirs(os.path.join(OUT, "backgrounds"), exist_ok=True)
    file = "backgrounds/%s__%s.jpg" % (pkg, stem)
    cv2.imwrite(os.path.join(OUT, file), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return entry(pkg, src, "background", file, img)


def backgrounds(index):
    for pkg, patterns in BACKGROUNDS.items():
        root = os.path.join(RAW, pkg)
        files = sorted(os.path.relpath(p, root) for p in glob.glob(root + "/**/*.*", recursive=True))
        for pattern in patterns:
            hits = [f for f in files if fnmatch.fnmatch(f, pattern) and f.endswith((".jpg", ".png"))]
            if not hits:
                sys.exit("fetch_photos: %s has no file %s" % (pkg, pattern))
            src = max(hits, key=lambda f: os.path.getsize(os.path.join(root, f)))  # largest version
            img = fit(cv2.imread(os.path.join(root, src), cv2.IMREAD_COLOR), 1280)
            if "/wallpapers/" in src:
                stem = src.split("/wallpapers/")[-1].split("/contents")[0]
            elif "/examples/" in src:  # OpenCV: two butterflies and two homes in different folders
                stem = os.path.splitext(src.split("/examples/")[-1])[0]
            else:
                stem = os.path.splitext(os.path.basename(src))[0]
            index.append(save_background(pkg, src, re.sub(r"[^A-Za-z0-9_-]+", "_", stem), img))


def read_pat(path):
    """A GIMP pattern (.pat: big-endian header size, version, width, height, bytes per pixel,
    'GPAT', name; then the pixels) as a BGR array."""
    data = open(path, "rb").read()
    header, _, w, h, bpp = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 20, 4))
    if data[20:24] != b"GPAT" or bpp not in (1, 2, 3, 4) or len(data) < header + w * h * bpp:
        sys.exit("fetch_photos: %s is not a GIMP pattern" % path)
    px = np.frombuffer(data[header:header + w * h * bpp], np.uint8).reshape(h, w, bpp)
    px = np.repeat(px[..., :1], 3, 2) if bpp < 3 else px[..., :3]
    return np.ascontiguousarray(px[..., ::-1])


def textures(index):
    root = os.path.join(RAW, TEXTURE_PACKAGE)
    for name in TEXTURES:
        hits = glob.glob(root + "/usr/share/gimp/*/patterns/%s.pat" % name)
        if not hits:
            sys.exit("fetch_photos: %s has no pattern %s" % (TEXTURE_PACKAGE, name))
        tile = read_pat(hits[0])
        W, H = TEXTURE_SIZE
        img = np.tile(tile, (-(-H // tile.shape[0]), -(-W // tile.shape[1]), 1))[:H, :W]
        e = save_background(TEXTURE_PACKAGE, os.path.relpath(hits[0], root), name.replace("/", "_"), img)
        e["tiled"] = [int(tile.shape[1]), int(tile.shape[0])]
        index.append(e)


def photographic(rgba):
    """True for a photograph, False for a drawing: drawings are mostly flat colour."""
    alpha = rgba[..., 3] > 128
    inner = cv2.erode(alpha.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if inner.sum() < 400:
        return False
    lap = np.abs(cv2.Laplacian(cv2.cvtColor(rgba[..., :3], cv2.COLOR_BGR2GRAY), cv2.CV_32F))
    return float((lap[inner] < 1).mean()) < 0.15


def cutouts(index):
    os.makedirs(os.path.join(OUT, "cutouts"), exist_ok=True)
    root = os.path.join(RAW, CUTOUT_PACKAGE)
    skipped = {"drawing": 0, "container": 0, "no alpha": 0}
    for path in sorted(glob.glob(root + "/usr/share/tuxpaint/stamps/**/*.png", recursive=True)):
        src = os.path.relpath(path, root)
        if "/cartoon/" in src or "/symbols/" in src or src.endswith("_mirror.png"):
            skipped["drawing"] += 1
            continue
        txt = os.path.splitext(path)[0] + ".txt"
        desc = open(txt, encoding="utf-8", errors="replace").readline() if os.path.exists(txt) else ""
        if CONTAINER_WORDS.search(desc + " " + os.path.basename(src).replace("_", " ")):
            skipped["container"] += 1
            continue
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] != 4:
            skipped["no alpha"] += 1
            continue
        if not photographic(img):
            skipped["drawing"] += 1
            continue
        ys, xs = np.nonzero(img[..., 3] > 8)
        img = fit(img[ys.min():ys.max() + 1, xs.min():xs.max() + 1], 320)
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.relpath(path, root + "/usr/share/tuxpaint/stamps")[:-4])
        file = "cutouts/%s.png" % stem
        cv2.imwrite(os.path.join(OUT, file), img)
        e = entry(CUTOUT_PACKAGE, src, "cutout", file, img)
        e["description"] = desc.strip()
        index.append(e)
    print("fetch_photos: cut-outs left out:", skipped)


index = []
backgrounds(index)
textures(index)
cutouts(index)
tmp = os.path.join(OUT, ".index.json.tmp")
with open(tmp, "w") as f:
    json.dump({"version": 1, "val_percent": VAL_PERCENT, "photos": index}, f, indent=1)
os.replace(tmp, os.path.join(OUT, "index.json"))
for kind in ("background", "cutout"):
    n = {s: sum(e["kind"] == kind and e["split"] == s for e in index) for s in ("train", "val")}
    print("fetch_photos: %s: %d train, %d val" % (kind, n["train"], n["val"]))
PYEOF
echo "fetch_photos: wrote $OUT/index.json"
