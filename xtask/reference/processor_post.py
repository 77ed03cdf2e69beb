"""postprocess.json: batch_decode and post_process_generation on generated-looking and malformed texts."""

import os
import random

from processor_common import write_json

OBJ, EOBJ, PH, EPH = "<object>", "</object>", "<phrase>", "</phrase>"
DOM = "</delimiter_of_multi_objects/>"
IMG_PREFIX = (
    "<image>. the, to and of as in I that' for is was- on’ it with The as at bet he have from by are \" you his “ "
    "this said not has an ( but had we her they will my or were their): up about out who one all been she can more "
    "would It</image>"
)
GOLDEN_CAPTION = (
    "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object> "
    "warming himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911></object>."
)
NO_PHRASE = (
    "<grounding> It is<object><patch_index_0044><patch_index_0863></object> and<phrase> two dogs</phrase><object>"
    "<patch_index_0001><patch_index_0040></delimiter_of_multi_objects/><patch_index_0500><patch_index_0500>"
    "</object>."
)

GOLDEN_IDS_1 = (
    [0, 64003] + list(range(4, 68)) + [64004, 64012, 712, 1648, 9, 64007, 10, 43867, 64008, 64009, 64057, 64876,
                                       64010, 5950, 597, 32, 64007, 10, 646, 64008, 64009, 64018, 64924, 64010, 4, 2]
)
GOLDEN_IDS_2 = [0, 64003] + list(range(4, 68)) + [64004, 64012] + [
    34645, 247, 38, 1648, 12, 3391, 55, 24, 1648, 1338, 10, 43867, 1280, 32, 64007, 10, 30879, 64008, 64009, 64018,
    65020, 64010, 12, 5, 1842, 4, 71, 17, 1679, 64007, 10, 3958, 64008, 64009, 64061, 64263, 64010, 6, 64007, 15719,
    64008, 64009, 64253, 64617, 64010, 6, 8, 64007, 9626, 64008, 64009, 64413, 64545, 64010, 6, 23, 64007, 10, 4363,
    64008, 64009, 64623, 64885, 64010, 2255, 8, 64007, 10, 3486, 64008, 64009, 64809, 65036, 64010, 1560, 2255, 4, 24,
    43867, 1684, 7, 27, 3774, 5, 10356, 9, 5, 646, 6, 8, 22, 1684, 7, 30, 10, 2007, 8, 16239, 4337, 4, 2,
]


def p(k):
    return f"<patch_index_{k:04d}>"


def obj(*pairs):
    return OBJ + DOM.join(p(a) + p(b) for a, b in pairs) + EOBJ


HAND = [
    ("golden_full", GOLDEN_CAPTION),
    ("golden_with_image_prefix", IMG_PREFIX + GOLDEN_CAPTION),
    ("golden_no_phrase", NO_PHRASE),
    ("empty", ""),
    ("only_spaces", "   "),
    ("only_eoi", "</image>"),
    ("two_eoi", "a</image>b<phrase> c</phrase>" + obj((1, 2)) + "</image> d<phrase> e</phrase>" + obj((3, 4))),
    ("eoi_at_end", "<phrase> a</phrase>" + obj((1, 2)) + "</image>"),
    ("plain_text", "just a plain caption."),
    ("unclosed_phrase", "<grounding> a<phrase> dog"),
    ("unclosed_object", "<phrase> dog</phrase><object><patch_index_0001>"),
    ("missing_eoo", "<phrase> dog</phrase><object><patch_index_0001><patch_index_0002>"),
    ("missing_eop", "<phrase> dog<object><patch_index_0001><patch_index_0002></object>"),
    ("missing_bop", " dog</phrase><object><patch_index_0001><patch_index_0002></object>"),
    ("patch_1024", "<phrase> x</phrase><object><patch_index_1024><patch_index_2000></object>"),
    ("patch_9999", "<phrase> x</phrase><object><patch_index_0000><patch_index_9999></object>"),
    ("patch_unpadded", "<phrase> x</phrase><object><patch_index_5><patch_index_44></object>"),
    ("patch_five_digits", "<phrase> x</phrase><object><patch_index_00044><patch_index_00863></object>"),
    ("patch_huge", "<phrase> x</phrase><object><patch_index_123456789><patch_index_1></object>"),
    ("nested_phrases", "<phrase> a<phrase> b</phrase>" + obj((10, 20)) + " c</phrase>" + obj((30, 40))),
    ("literal_lt", "a < b<phrase> c</phrase>" + obj((1, 33))),
    ("literal_lt_gt", "x<y and y>z<phrase> w</phrase>" + obj((2, 66)) + " end"),
    ("literal_lt_no_gt", "a <b c<phrase> d</phrase>" + obj((3, 99))),
    ("literal_gt", "a > b<phrase> c</phrase>" + obj((1, 33))),
    ("tag_across_newline", "<a\nb> c<phrase> d</phrase>" + obj((4, 100))),
    ("non_ascii", "<grounding> 日本の<phrase> 犬</phrase>" + obj((0, 1023)) + " は🐶です。"),
    ("non_ascii_emoji_phrase", "<phrase> 🐶 café</phrase>" + obj((33, 66)) + " ﬁne"),
    ("space_between_tags", "<phrase> a</phrase> " + obj((1, 2))),
    ("trailing_delimiter", "<phrase> a</phrase><object><patch_index_0001><patch_index_0002>" + DOM + EOBJ),
    ("one_patch_only", "<phrase> a</phrase><object><patch_index_0001></object>"),
    ("three_patches", "<phrase> a</phrase><object>" + p(1) + p(2) + p(3) + EOBJ),
    ("three_boxes", "<phrase> many</phrase>" + obj((1, 34), (100, 200), (500, 500))),
    ("newline_in_phrase", "<phrase> a\nb </phrase>" + obj((5, 5))),
    ("leading_ws", "   <grounding>   text<phrase> here</phrase>" + obj((0, 33)) + "  "),
    ("leading_unicode_ws", "\u3000\u00a0<phrase> x</phrase>" + obj((1, 2)) + "\u3000"),
    ("leading_python_ws", "\x1c\x1d<phrase> x</phrase>" + obj((1, 2)) + " y\x1f"),
    ("phrase_all_spaces", "a<phrase>   </phrase>" + obj((1, 2)) + " b"),
    ("phrase_trailing_spaces", "a<phrase>dog  </phrase>" + obj((1, 2)) + " b"),
    ("phrase_tabs", "a<phrase>\tdog\t</phrase>" + obj((1, 2))),
    ("same_index", "<phrase> a</phrase>" + obj((5, 5))),
    ("same_row", "<phrase> a</phrase>" + obj((32, 40))),
    ("same_col", "<phrase> a</phrase>" + obj((3, 995))),
    ("reversed", "<phrase> a</phrase>" + obj((900, 10))),
    ("bare_patches", "text <patch_index_0044><patch_index_0863> more"),
    ("two_objects_one_phrase", "<phrase> a</phrase>" + obj((1, 2)) + obj((3, 4))),
    ("object_first", obj((7, 8)) + " then text"),
    ("objects_only", obj((7, 8), (9, 10)) + obj((11, 12))),
    ("image_only", IMG_PREFIX),
    ("grounding_only", "<grounding>"),
    ("all_tags", "</doc><image></image></chunk></line><phrase></phrase><object></object>" + DOM + "<grounding>"),
    ("other_tags", "</chunk> a</line> b</doc><phrase> c</phrase>" + obj((1, 2))),
    ("lt_inside_phrase", "<phrase> a<b</phrase>" + obj((1, 2))),
    ("uppercase_tags", "<PHRASE> a</PHRASE><OBJECT><PATCH_INDEX_0001><PATCH_INDEX_0002></OBJECT>"),
    ("extra_spaces_in_tag", "<phrase> a</phrase><object> <patch_index_0001><patch_index_0002></object>"),
    ("patch_arabic_indic_digits", "<phrase> a</phrase><object><patch_index_\u0664\u0664><patch_index_\u0668\u0666\u0663>"
     "</object>"),
    ("patch_fullwidth_digits", "<phrase> a</phrase><object><patch_index_\uff10\uff10\uff14\uff14><patch_index_0863>"
     "</object>"),
    ("negative_like", "<phrase> a</phrase><object><patch_index_-001><patch_index_0002></object>"),
    ("describe_golden",
     "<grounding> Describe this image in detail: The image features a snowman sitting by<phrase> a campfire</phrase>"
     + obj((5, 1007)) + " in the snow."),
]

WORDS = ["a", "dog", "cat", "man", "woman", "the", "snowman", "tree", "red", "ball", "sitting", "on", "table",
         "with", "two", "of", "and", "in", "near", "sky", "big", "small", "café", "naïve", "Straße", "日本", "犬",
         "🐶", "über", "ﬁne", "Ελλάδα", "東京タワー", "x²", "…", "it's", "don't", ",", ".", "!", "?", "(", ")", "'",
         "\"", "-", ":"]


def rand_text(rng):
    """A generated-looking Kosmos-2 output, sometimes malformed."""
    parts = []
    if rng.random() < 0.25:
        parts.append(IMG_PREFIX if rng.random() < 0.5 else "<image>junk</image>")
    if rng.random() < 0.6:
        parts.append("<grounding>")
    if rng.random() < 0.1:
        parts.append(rng.choice([" ", "  ", "\t", "\n", "\u3000"]))
    for _ in range(rng.randint(1, 7)):
        r = rng.random()
        words = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        if r < 0.4:
            parts.append(words)
            continue
        n = rng.choice([1, 1, 1, 2, 3])
        pairs = []
        for _ in range(n):
            a = rng.randrange(1024)
            b = rng.randrange(1024) if rng.random() < 0.7 else a + rng.choice([0, 1, 32, 33])
            pairs.append((a, min(b, 1023)))
        o = obj(*pairs)
        m = rng.random()
        if m < 0.04:
            o = o[: -len(EOBJ)]
        elif m < 0.08:
            o = o.replace(p(pairs[0][1]), f"<patch_index_{rng.randrange(1024, 10000)}>", 1)
        elif m < 0.11:
            o = o.replace(p(pairs[0][0]), f"<patch_index_{pairs[0][0]}>", 1)
        elif m < 0.13:
            o = " " + o
        elif m < 0.15:
            o = o.replace(p(pairs[0][1]), "", 1)
        if r < 0.85:
            ph = words
            m2 = rng.random()
            if m2 < 0.04:
                ph = ph + " <" + rng.choice(WORDS)
            elif m2 < 0.07:
                ph = ph + "\n" + rng.choice(WORDS)
            elif m2 < 0.09:
                ph = ph + "  "
            if m2 > 0.97:
                parts.append(PH + ph + o)
            elif m2 > 0.94:
                parts.append(ph + EPH + o)
            elif m2 > 0.91:
                parts.append(PH + " x" + PH + ph + EPH + o + EPH)
            else:
                parts.append(PH + ph + EPH + o)
        else:
            parts.append(o)
    if rng.random() < 0.7:
        parts.append(rng.choice([".", "!", " .", "", "?"]))
    if rng.random() < 0.05:
        parts.append(rng.choice(["  ", "\n", " < x", " 2 > 1"]))
    return "".join(parts)


def gen_record(proc, name, text, tags):
    caption = proc.post_process_generation(text, cleanup_and_extract=False)
    clean, entities = proc.post_process_generation(text)
    ents = []
    for ename, (s, e), boxes in entities:
        ents.append([ename, [int(s), int(e)], [[float(v) for v in b] for b in boxes]])
    return {"name": name, "text": text, "caption": caption, "clean_text": clean, "entities": ents, "tags": tags}


def decode_ids_corpus(proc, rng):
    tok = proc.tokenizer
    cases = [("golden_snowman", [GOLDEN_IDS_1]), ("golden_describe", [GOLDEN_IDS_2]),
             ("golden_both_ragged", [GOLDEN_IDS_1, GOLDEN_IDS_2]),
             ("specials", [[0, 1, 2, 3, 64001]]), ("specials_mixed", [[0, 712, 1, 1648, 2, 9, 3, 64001, 10]]),
             ("placeholders", [list(range(4, 68))]), ("tags", [list(range(64002, 64013))]),
             ("patches_edges", [[64013, 64014, 65035, 65036]]), ("empty_row", [[]]), ("empty_and_non_empty", [[], [712]]),
             ("pads_left", [[1, 1, 1, 0, 64012, 712, 1648, 9]]), ("pads_right", [[0, 712, 1648, 9, 2, 1, 1, 1]]),
             ("eos_middle", [[0, 712, 2, 1648, 2]])]
    unicode_texts = ["Café naïve résumé", "日本語のテキスト", "🐶🐱 👍🏽", "Ελληνικά", "한국어", "ﬁne ＦＵＬＬ",
                     "it's don't I'm", "a . b , c ! d ?", "hello  world", "x² … ™", "Straße über", "🇫🇷 flag",
                     "a 's b 've c 're d n't e 'm f ' g", "$100.50 & 20%"]
    for i, t in enumerate(unicode_texts):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        cases.append((f"unicode_{i:02d}", [ids]))
        cases.append((f"unicode_{i:02d}_tagged", [[0, 64012, 64007] + ids + [64008, 64009, 64013 + i, 64500 + i,
                                                                              64010, 4, 2]]))
    pieces_non_ascii = []
    for t in unicode_texts:
        pieces_non_ascii.extend(i for i in tok(t, add_special_tokens=False)["input_ids"] if i > 67)
    pieces_non_ascii = sorted(set(pieces_non_ascii))
    for k in range(60):
        nrows = rng.randint(1, 4)
        batch = []
        for _ in range(nrows):
            row = []
            if rng.random() < 0.5:
                row.append(0)
            if rng.random() < 0.3:
                row += [64003] + list(range(4, 68)) + [64004]
            if rng.random() < 0.6:
                row.append(64012)
            for _ in range(rng.randint(0, 25)):
                r = rng.random()
                if r < 0.45:
                    row.append(rng.randrange(4, 64001))
                elif r < 0.6:
                    row.append(rng.choice(pieces_non_ascii))
                elif r < 0.72:
                    row.append(rng.randrange(64002, 64013))
                elif r < 0.85:
                    row.append(rng.randrange(64013, 65037))
                elif r < 0.92:
                    row.append(rng.choice([0, 1, 2, 3, 64001]))
                else:
                    row.append(rng.randrange(4, 68))
            if rng.random() < 0.5:
                row.append(2)
            batch.append(row)
        cases.append((f"random_{k:02d}", batch))
    # Structured generated-looking rows: phrase + object blocks.
    for k in range(30):
        row = [0, 64012]
        for _ in range(rng.randint(1, 4)):
            words = tok(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))),
                        add_special_tokens=False)["input_ids"]
            row += [64007] + words + [64008, 64009]
            for j in range(rng.choice([1, 1, 2])):
                if j:
                    row.append(64011)
                row += [64013 + rng.randrange(1024), 64013 + rng.randrange(1024)]
            row.append(64010)
            row += tok(" " + rng.choice(WORDS), add_special_tokens=False)["input_ids"]
        row += [4, 2] + ([1] * rng.randint(0, 3))
        cases.append((f"structured_{k:02d}", [row]))
    return cases


def gen_postprocess(proc, vers, out_dir):
    rng = random.Random(20240601)
    gens = [gen_record(proc, f"hand:{n}", t, ["hand"]) for n, t in HAND]
    for k in range(320):
        gens.append(gen_record(proc, f"random:{k:03d}", rand_text(rng), ["random"]))
    decs = []
    for name, ids in decode_ids_corpus(proc, rng):
        skip = proc.batch_decode(ids, skip_special_tokens=True)
        rec = {
            "name": name,
            "ids": ids,
            "skip": skip,
            "keep": proc.batch_decode(ids, skip_special_tokens=False),
            "skip_noclean": proc.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
            "keep_noclean": proc.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "image_text_to_text": proc.post_process_image_text_to_text(ids),
            "tags": ["decode"],
        }
        decs.append(rec)
        for r, text in enumerate(skip):
            gens.append(gen_record(proc, f"decode:{name}:{r}", text, ["decode"]))
    names = [g["name"] for g in gens]
    assert len(names) == len(set(names))
    clean = proc.tokenizer.clean_up_tokenization_spaces
    write_json(os.path.join(out_dir, "postprocess.json"), {
        "versions": vers,
        "clean_up_tokenization_spaces": bool(clean),
        "num_patches_per_side": 32,
        "generation": gens,
        "decode": decs,
    })
    return len(gens), len(decs)

