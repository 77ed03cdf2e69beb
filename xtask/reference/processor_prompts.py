"""Prompt cases for prompts.json: Kosmos2Processor.__call__ on texts, images and bboxes.

A case is described by plain data (text, image names, bboxes as Python objects, kwargs); `run_case` calls HF and
returns the JSON record documented in tests/fixtures/processor/README.md.
"""

from processor_common import bboxes_to_json, rows

# Small real images (content never changes ids; small ones keep the run fast).
IMAGES = ["chelsea.png", "rocket.jpg", "grace_hopper.jpg", "camera.png"]

TAGS = [
    "</doc>",
    "<image>",
    "</image>",
    "</chunk>",
    "</line>",
    "<phrase>",
    "</phrase>",
    "<object>",
    "</object>",
    "</delimiter_of_multi_objects/>",
    "<grounding>",
]

# Base texts: each is run under the 8 variants of VARIANTS (image or not x special-token settings).
BASE_TEXTS = [
    ("grounding_an_image_of", "<grounding>An image of"),
    ("grounding_space", "<grounding> An image of"),
    ("grounding_double_spaces", "<grounding>  An  image of"),
    ("plain_an_image_of", "An image of"),
    ("describe_detail", "<grounding>Describe this image in detail:"),
    ("empty", ""),
    ("only_spaces", "   "),
    ("spaces_around", " hello  world "),
    ("tabs", "\thello\tworld\t"),
    ("newlines", "line one\nline two\n"),
    ("crlf", "a\r\nb\r\n\r\nc"),
    ("repeated_spaces_inside", "a     b          c"),
    ("all_tags", "".join(TAGS)),
    ("all_tags_spaced", " ".join(TAGS)),
    ("tags_in_words", "x</doc>y<image>z</image>w</chunk>v</line>u"),
    ("phrase_simple", "a<phrase>b</phrase>c"),
    ("snowman_phrase", "<grounding><phrase> a snowman</phrase> is"),
    ("patch_tokens", "<patch_index_0000><patch_index_1023> <patch_index_0512>x"),
    ("patch_not_tokens", "<patch_index_1024> <patch_index_44> <PATCH_INDEX_0001> <patch_index_-001>"),
    ("specials_literal", "<s>a</s>b<pad>c<unk>d<mask>e"),
    ("specials_spaced", "x <s> y </s> z <mask> w"),
    ("accents", "Café naïve résumé à la crème brûlée"),
    ("cjk", "日本語のテキストと中文和한국어"),
    ("emoji", "a dog 🐶 and a cat 🐱 👨‍👩‍👧"),
    ("greek_hebrew_arabic", "Ελληνικά עברית العربية"),
    ("combining", "e\u0301 vs \u00e9, n\u0303"),
    ("ligatures", "ﬁne ﬂower ﬀ ﬃ ﬄ ﬅ ﬆ"),
    ("fullwidth", "ＦＵＬＬ　ｗｉｄｔｈ！ １２３"),
    ("compat_forms", "①②③ ㎏ ㎞ ｶﾀｶﾅ x² Ⅻ … ™ ℃ ½"),
    ("zero_width", "a\u200bb c\u200dd \ufeffbom soft\u00adhyphen"),
    ("python_only_whitespace", "\x1chello\x1d \x1eworld\x1f"),
    ("unicode_whitespace", "\u00a0nbsp\u00a0 \u3000ideo\u3000 \u2028ls\u2029 \x85nel\x85 \x0bvt\x0c"),
    ("en_quad_spaces", "\u2002a\u2003b\u2009c\u202fd\u205fe"),
    ("punctuation", "Hello, world! It's 5 o'clock... isn't it? (yes) [no] {maybe}"),
    ("clean_up_candidates", "a . b , c ! d ? e n't f 's g 're h 've i 'm"),
    ("numbers_symbols", "$100.50 & 20% #1 @home ~/path a+b=c 3.14159 1,000,000"),
    ("lt_gt_literal", "a < b > c <notatag> <grounding <phrase >"),
    ("control_chars", "a\x00b\x07c\x1bd"),
    ("case_tags", "<GROUNDING><Phrase>x</Phrase>"),
    ("long_words", "supercalifragilisticexpialidocious antidisestablishmentarianism"),
]

# (suffix, with_image, kwargs)
VARIANTS = [
    ("", False, {}),
    ("+img", True, {}),
    ("+eos", False, {"add_eos_token": True}),
    ("+img+eos", True, {"add_eos_token": True}),
    ("+nospecial", False, {"add_special_tokens": False}),
    ("+img+nospecial", True, {"add_special_tokens": False}),
    ("+nospecial+eos", False, {"add_special_tokens": False, "add_eos_token": True}),
    ("+img+nospecial+eos", True, {"add_special_tokens": False, "add_eos_token": True}),
]

SNOWMAN_BOX = (0.390625, 0.046875, 0.984375, 0.828125)
FIRE_BOX = (0.171875, 0.015625, 0.484375, 0.890625)

LONG_TEXT = (
    "<grounding> The image features a snowman sitting by a campfire in the snow. He is wearing a hat, scarf, and "
    "gloves, with a pot nearby and a cup placed nearby. The snowman appears to be enjoying the warmth of the fire."
)


class Case:
    def __init__(self, name, text, images=None, bboxes=None, side="right", tags=(), **kwargs):
        self.name = name
        self.text = text
        self.images = images
        self.bboxes = bboxes
        self.side = side
        self.tags = list(tags)
        self.kwargs = kwargs

    def input_json(self):
        return {
            "name": self.name,
            "text": self.text,
            "single": isinstance(self.text, str),
            "images": self.images,
            "bboxes": bboxes_to_json(self.bboxes),
            "tokenizer_padding_side": self.side,
            "kwargs": dict(self.kwargs),
            "tags": self.tags,
        }


def images_for(n, offset):
    return [IMAGES[(offset + i) % len(IMAGES)] for i in range(n)]


def call(proc, images_cache, case):
    """Run HF on a Case; returns (encoding, processed_texts). Raises whatever HF raises."""
    text = case.text
    images = None
    if case.images is not None:
        pil = [images_cache(n) for n in case.images]
        images = pil[0] if isinstance(text, str) and len(pil) == 1 else pil
    proc.tokenizer.padding_side = case.side
    try:
        enc = proc(text=text, images=images, bboxes=case.bboxes, **case.kwargs)
        processed = proc.preprocess_examples(
            text, images, case.bboxes, num_image_tokens=case.kwargs.get("num_image_tokens", 64)
        )
    finally:
        proc.tokenizer.padding_side = "right"
    return enc, processed


def run_case(proc, images_cache, case):
    enc, processed = call(proc, images_cache, case)
    single = isinstance(case.text, str)
    expected = {
        "input_ids": rows(enc["input_ids"], single),
        "attention_mask": rows(enc["attention_mask"], single),
        "processed_text": [processed] if single else list(processed),
    }
    if case.images is not None:
        expected["image_embeds_position_mask"] = rows(enc["image_embeds_position_mask"], single)
        assert "pixel_values" in enc
    else:
        assert "image_embeds_position_mask" not in enc
    for key in ("input_ids", "attention_mask"):
        assert len(expected[key]) == (1 if single else len(case.text))
    out = case.input_json()
    out["expected"] = expected
    return out


def base_cases():
    cases = []
    for i, (name, text) in enumerate(BASE_TEXTS):
        for suffix, with_image, kwargs in VARIANTS:
            images = images_for(1, i) if with_image else None
            tags = ["base"] + (["image"] if with_image else []) + [k for k in kwargs]
            cases.append(Case(f"{name}{suffix}", text, images=images, tags=tags, **kwargs))
    # Every tag token alone, and inside words, without and with an image.
    for i, tag in enumerate(TAGS):
        cases.append(Case(f"tag_alone_{i:02d}", tag, tags=["tag"]))
        cases.append(Case(f"tag_in_text_{i:02d}", f"word{tag}word {tag} end", tags=["tag"]))
        cases.append(Case(f"tag_in_text_{i:02d}+img", f"  {tag}word ", images=images_for(1, i), tags=["tag", "image"]))
    for k in (0, 1, 2, 31, 32, 44, 511, 863, 1000, 1022, 1023):
        cases.append(Case(f"patch_token_{k:04d}", f"a<patch_index_{k:04d}>b <patch_index_{k:04d}>", tags=["patch"]))
    return cases


def bbox_cases():
    c = []
    add = c.append
    g = "<grounding>"
    # Golden examples (reference 7.3 and 11).
    add(Case("golden_snowman_box", f"{g}<phrase> a snowman</phrase> is", bboxes=[SNOWMAN_BOX], tags=["golden", "bbox"]))
    puppies = "<grounding> <phrase> Two puppies </phrase> sit in a field of grass."
    add(Case("golden_puppies_eos", puppies, add_eos_token=True, tags=["golden"]))
    add(Case("golden_puppies_box_eos", puppies, bboxes=[(79, 1016)], add_eos_token=True, tags=["golden", "bbox"]))
    add(Case("golden_puppies_box_eos+img", puppies, images=["two_dogs.jpg"], bboxes=[(79, 1016)],
             add_eos_token=True, tags=["golden", "bbox", "image"]))
    add(Case("golden_puppies_list_box", puppies, bboxes=[[(79, 1016)]], add_eos_token=True, tags=["golden", "bbox"]))
    add(Case("golden_puppies_float_box", puppies, bboxes=[(0.0, 0.0, 1.0, 1.0)], tags=["bbox"]))
    two = f"{g}An image of<phrase> a snowman</phrase> warming himself by<phrase> a fire</phrase>."
    add(Case("golden_two_phrases", two, bboxes=[SNOWMAN_BOX, FIRE_BOX], tags=["golden", "bbox"]))
    add(Case("golden_two_phrases+img", two, images=["snowman.jpg"], bboxes=[SNOWMAN_BOX, FIRE_BOX],
             tags=["golden", "bbox", "image"]))
    add(Case("golden_two_phrases_idx", two, bboxes=[(44, 863), (5, 911)], tags=["golden", "bbox"]))

    # Float boxes: corner cases of floor / ceil(x*32 - 1).
    float_boxes = [
        (0.0, 0.0, 1.0, 1.0),
        (0.1, 0.2, 0.3, 0.4),
        (0.5, 0.5, 0.53125, 0.53125),
        (0.5, 0.25, 0.75, 0.5),
        (0.03125, 0.03125, 0.0625, 0.0625),
        (0.0, 0.0, 0.001, 0.001),
        (0.999, 0.999, 1.0, 1.0),
        (0.31249999, 0.3125, 0.31250001, 0.46875),
        (1 / 3, 1 / 7, 2 / 3, 6 / 7),
        (0.123456789, 0.987654321 - 0.5, 0.876543219, 0.9999999999),
        (0.2, 0.6, 0.7, 0.9),
        (1e-9, 1e-9, 2e-9, 2e-9),
        (0.0, 0.96875, 0.03125, 1.0),
        (0.96875, 0.0, 1.0, 0.03125),
    ]
    for i, box in enumerate(float_boxes):
        add(Case(f"float_box_{i:02d}", "<phrase>thing</phrase> here", bboxes=[box], tags=["bbox", "float"]))
    idx_boxes = [(0, 0), (0, 1023), (1023, 1023), (5, 911), (44, 863), (31, 992), (512, 513), (100, 50)]
    for i, box in enumerate(idx_boxes):
        add(Case(f"index_box_{i:02d}", "a <phrase>thing</phrase>", bboxes=[box], tags=["bbox", "index"]))

    three = f"{g}<phrase>a dog</phrase> and<phrase> two cats</phrase> near <phrase>trees </phrase>."
    entries = [
        ("multi_float", [[(0.1, 0.1, 0.2, 0.2), (0.3, 0.3, 0.9, 0.9)], None, [(0.5, 0.5, 0.6, 0.7)]]),
        ("multi_index", [None, [(1, 2), (3, 4), (1000, 1023)], (10, 20)]),
        ("multi_mixed", [[(0.1, 0.1, 0.2, 0.2), (4, 40)], [(0.0, 0.0, 1.0, 1.0)], []]),
        ("all_none", [None, None, None]),
        ("all_empty", [[], [], []]),
        ("none_and_empty", [None, [], (0.25, 0.25, 0.75, 0.75)]),
        ("tuple_and_list", [(7, 8), [(9, 10)], [(0.5, 0.5, 1.0, 1.0), (0.0, 0.0, 0.5, 0.5), (2, 3)]]),
    ]
    for name, bb in entries:
        add(Case(f"three_phrases_{name}", three, bboxes=bb, tags=["bbox"]))
        add(Case(f"three_phrases_{name}+img", three, images=["rocket.jpg"], bboxes=bb, tags=["bbox", "image"]))
        add(Case(f"three_phrases_{name}+eos", three, bboxes=bb, add_eos_token=True, tags=["bbox"]))
    add(Case("three_phrases_no_bboxes", three, tags=["bbox"]))
    add(Case("phrases_empty_bbox_list", three, bboxes=[], tags=["bbox"]))

    # Phrase-matching corner cases of the regex `<phrase>.+?</phrase>`.
    add(Case("phrase_adjacent", "<phrase>a</phrase><phrase>b</phrase>", bboxes=[(1, 2), (3, 4)], tags=["bbox"]))
    add(Case("phrase_nested", "<phrase>a <phrase>b</phrase> c</phrase> d", bboxes=[(1, 2)], tags=["bbox"]))
    add(Case("phrase_empty_spans", "<phrase></phrase> x</phrase>", bboxes=[(5, 6)], tags=["bbox"]))
    add(Case("phrase_newline_inside", "<phrase>a\nb</phrase> <phrase>c</phrase>", bboxes=[(7, 8)], tags=["bbox"]))
    add(Case("phrase_unclosed_then_closed", "<phrase>a <phrase>b</phrase>", bboxes=[(0.0, 0.0, 0.5, 0.5)],
             tags=["bbox"]))
    add(Case("phrase_at_end", "text then <phrase>end</phrase>", bboxes=[[(1, 1), (2, 2)]], tags=["bbox"]))
    add(Case("phrase_unicode", "<phrase> ﬁne café 🐶 </phrase>ok", bboxes=[(0.1, 0.1, 0.9, 0.9)], tags=["bbox"]))
    add(Case("phrase_existing_object", "<phrase>x</phrase><object><patch_index_0001><patch_index_0002></object>",
             bboxes=[(3, 4)], tags=["bbox"]))
    add(Case("phrase_spaces_strip", "   <phrase>x</phrase>   ", bboxes=[(3, 4)], tags=["bbox"]))
    add(Case("phrase_box+nospecial", "<phrase>x</phrase> y", bboxes=[(3, 4)], add_special_tokens=False,
             tags=["bbox"]))
    add(Case("phrase_box+img+nospecial", "<phrase>x</phrase> y", images=["camera.png"], bboxes=[(3, 4)],
             add_special_tokens=False, tags=["bbox", "image"]))

    # Batches with bboxes.
    batch_texts = [f"{g}<phrase>one</phrase>", "no phrase at all", f"<phrase>a</phrase> and <phrase>b</phrase>"]
    batch_boxes = [[(0.1, 0.2, 0.3, 0.4)], None, [[(1, 2), (3, 4)], None]]
    add(Case("batch_bboxes", batch_texts, bboxes=batch_boxes, tags=["bbox", "batch"]))
    add(Case("batch_bboxes+pad", batch_texts, bboxes=batch_boxes, padding=True, tags=["bbox", "batch"]))
    add(Case("batch_bboxes+img", batch_texts, images=images_for(3, 0), bboxes=batch_boxes,
             tags=["bbox", "batch", "image"]))
    add(Case("batch_bboxes+img+left", batch_texts, images=images_for(3, 1), bboxes=batch_boxes, side="left",
             tags=["bbox", "batch", "image"]))
    add(Case("batch_bboxes_all_none", batch_texts, bboxes=[None, None, None], tags=["bbox", "batch"]))
    add(Case("batch_bboxes_empty_lists", batch_texts, bboxes=[[], [], []], tags=["bbox", "batch"]))
    return c


def batch_cases():
    c = []
    add = c.append
    texts3 = ["<grounding>An image of", "hi", "<grounding>Describe this image in detail: a long one"]
    texts_uni = ["ﬁne", " ", "日本語 🐶\t tab", ""]
    same_len = ["one two", "three four"]
    groups = [("g3", texts3), ("uni", texts_uni), ("same", same_len), ("one", ["just one"]),
              ("empties", ["", ""])]
    for gname, texts in groups:
        n = len(texts)
        add(Case(f"batch_{gname}", texts, tags=["batch"]))
        add(Case(f"batch_{gname}+pad", texts, padding=True, tags=["batch", "padding"]))
        add(Case(f"batch_{gname}+pad_longest_left", texts, padding="longest", padding_side="left",
                 tags=["batch", "padding"]))
        add(Case(f"batch_{gname}+pad+tokleft", texts, padding=True, side="left", tags=["batch", "padding"]))
        add(Case(f"batch_{gname}+pad_max16", texts, padding="max_length", max_length=16,
                 tags=["batch", "padding"]))
        add(Case(f"batch_{gname}+pad_mult8", texts, padding=True, pad_to_multiple_of=8, tags=["batch", "padding"]))
        add(Case(f"batch_{gname}+pad_mult8_left", texts, padding=True, pad_to_multiple_of=8, padding_side="left",
                 tags=["batch", "padding"]))
        add(Case(f"batch_{gname}+trunc4", texts, truncation=True, max_length=4, tags=["batch", "truncation"]))
        add(Case(f"batch_{gname}+trunc4+pad", texts, truncation=True, max_length=4, padding=True,
                 tags=["batch", "truncation"]))
        add(Case(f"batch_{gname}+trunc4+eos", texts, truncation=True, max_length=4, add_eos_token=True,
                 tags=["batch", "truncation"]))
        add(Case(f"batch_{gname}+eos+pad", texts, add_eos_token=True, padding=True, tags=["batch"]))
        add(Case(f"batch_{gname}+nospecial+pad", texts, add_special_tokens=False, padding=True, tags=["batch"]))
        add(Case(f"batch_{gname}+donotpad", texts, padding="do_not_pad", tags=["batch"]))
        # With images: HF always pads to the longest row, by the tokenizer's padding_side attribute.
        add(Case(f"batch_{gname}+img", texts, images=images_for(n, 0), tags=["batch", "image"]))
        add(Case(f"batch_{gname}+img+tokleft", texts, images=images_for(n, 1), side="left",
                 tags=["batch", "image"]))
        add(Case(f"batch_{gname}+img+kwleft", texts, images=images_for(n, 2), padding=True, padding_side="left",
                 tags=["batch", "image"]))
        add(Case(f"batch_{gname}+img+pad_max80", texts, images=images_for(n, 3), padding="max_length",
                 max_length=80, tags=["batch", "image", "padding"]))
        add(Case(f"batch_{gname}+img+pad_max80+tokleft", texts, images=images_for(n, 0), padding="max_length",
                 max_length=80, side="left", tags=["batch", "image", "padding"]))
        add(Case(f"batch_{gname}+img+pad_mult8", texts, images=images_for(n, 1), padding=True,
                 pad_to_multiple_of=8, tags=["batch", "image", "padding"]))
        add(Case(f"batch_{gname}+img+eos", texts, images=images_for(n, 2), add_eos_token=True,
                 tags=["batch", "image"]))
        add(Case(f"batch_{gname}+img+nospecial", texts, images=images_for(n, 3), add_special_tokens=False,
                 tags=["batch", "image"]))
        add(Case(f"batch_{gname}+img+trunc70", texts, images=images_for(n, 0), truncation=True, max_length=70,
                 tags=["batch", "image", "truncation"]))
    # Single strings with padding / truncation.
    single = "<grounding>An image of a dog"
    add(Case("single+pad_max12", single, padding="max_length", max_length=12, tags=["padding"]))
    add(Case("single+pad_max12_left", single, padding="max_length", max_length=12, padding_side="left",
             tags=["padding"]))
    add(Case("single+pad_mult16", single, padding=True, pad_to_multiple_of=16, tags=["padding"]))
    add(Case("single+trunc3", single, truncation=True, max_length=3, tags=["truncation"]))
    add(Case("single+trunc3+eos", single, truncation=True, max_length=3, add_eos_token=True, tags=["truncation"]))
    add(Case("single+long+trunc20", LONG_TEXT, truncation=True, max_length=20, tags=["truncation"]))
    add(Case("single+long+trunc20+pad", LONG_TEXT, truncation=True, max_length=20, padding="max_length",
             tags=["truncation"]))
    add(Case("single+long", LONG_TEXT, tags=["long"]))
    add(Case("single+long+img", LONG_TEXT, images=["grace_hopper.jpg"], tags=["long", "image"]))
    add(Case("single+img+pad_max100", single, images=["rocket.jpg"], padding="max_length", max_length=100,
             tags=["image", "padding"]))
    add(Case("single+img+trunc80", LONG_TEXT, images=["rocket.jpg"], truncation=True, max_length=80,
             tags=["image", "truncation"]))
    # num_image_tokens / first_image_token_id.
    for name, kw in [("nit8", {"num_image_tokens": 8}), ("nit1", {"num_image_tokens": 1}),
                     ("nit0", {"num_image_tokens": 0}), ("fit100", {"first_image_token_id": 100}),
                     ("nit4_fit64003", {"num_image_tokens": 4, "first_image_token_id": 64003}),
                     ("nit64_fit4", {"num_image_tokens": 64, "first_image_token_id": 4})]:
        add(Case(f"image_tokens_{name}", "<grounding>An image of", images=["camera.png"], tags=["image"], **kw))
        add(Case(f"image_tokens_{name}+nospecial", "x", images=["camera.png"], add_special_tokens=False,
                 tags=["image"], **kw))
        add(Case(f"image_tokens_{name}+batch", ["a", "b c d"], images=images_for(2, 0), tags=["image", "batch"],
                 **kw))
        add(Case(f"image_tokens_{name}+noimg", "<grounding>An image of", tags=[], **kw))
    return c


def all_cases():
    cases = base_cases() + bbox_cases() + batch_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases
