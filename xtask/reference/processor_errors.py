"""errors.json: inputs HF rejects (with the exception), and dubious inputs HF accepts (with its output)."""

import math
import os

from processor_common import write_json
from processor_prompts import Case, call, run_case

PH1 = "<grounding><phrase> a dog</phrase> runs"
PH2 = "<phrase>a</phrase> and <phrase>b</phrase>"
NAN, INF = math.nan, math.inf

# (name, about, Case)
REJECTED = [
    ("no_text_no_images", "neither text nor images given", Case("", None)),
    ("more_boxes_than_phrases", "bbox entries != number of <phrase>...</phrase> pairs",
     Case("", PH1, bboxes=[(1, 2), (3, 4)])),
    ("fewer_boxes_than_phrases", "bbox entries != number of phrases", Case("", PH2, bboxes=[(1, 2)])),
    ("boxes_without_phrase", "bbox entries given for a text without any phrase", Case("", "no phrase", bboxes=[None])),
    ("empty_phrase_not_counted", "`<phrase></phrase>` is not a phrase (regex needs >= 1 char)",
     Case("", "<phrase></phrase> and <phrase>x</phrase>", bboxes=[None, (1, 2)])),
    ("newline_phrase_not_counted", "`.` in the phrase regex does not match a newline",
     Case("", "<phrase>a\nb</phrase>", bboxes=[(1, 2)])),
    ("none_inside_box_list", "None inside a list of boxes", Case("", PH1, bboxes=[[(1, 2), None]])),
    ("only_none_inside_box_list", "None inside a list of boxes", Case("", PH1, bboxes=[[None]])),
    ("x2_le_x1", "float box with x2 <= x1", Case("", PH1, bboxes=[(0.5, 0.1, 0.4, 0.9)])),
    ("x2_eq_x1", "float box with x2 == x1", Case("", PH1, bboxes=[(0.5, 0.1, 0.5, 0.9)])),
    ("y2_le_y1", "float box with y2 <= y1", Case("", PH1, bboxes=[(0.1, 0.5, 0.9, 0.2)])),
    ("zero_box", "float box of zero size", Case("", PH1, bboxes=[(0.0, 0.0, 0.0, 0.0)])),
    ("nan_box", "NaN coordinate (comparison fails)", Case("", PH1, bboxes=[(NAN, 0.1, 0.9, 0.9)])),
    ("inf_box", "infinite coordinate (math.ceil overflow)", Case("", PH1, bboxes=[(0.1, 0.1, INF, 0.9)])),
    ("neg_inf_box", "-infinite coordinate (math.floor overflow)", Case("", PH1, bboxes=[(-INF, 0.1, 0.9, 0.9)])),
    ("ints_in_4_box", "4-element box of ints (floats required)", Case("", PH1, bboxes=[(0, 0, 1, 1)])),
    ("mixed_4_box", "4-element box mixing int and float", Case("", PH1, bboxes=[(0.0, 0, 1.0, 1.0)])),
    ("floats_in_2_box", "2-element box of floats (ints required)", Case("", PH1, bboxes=[(0.5, 0.6)])),
    ("box_arity_1", "1-element box", Case("", PH1, bboxes=[(5,)])),
    ("box_arity_3", "3-element box", Case("", PH1, bboxes=[(0.1, 0.2, 0.3)])),
    ("box_arity_3_ints", "3-element box of ints", Case("", PH1, bboxes=[(1, 2, 3)])),
    ("box_arity_5", "5-element box", Case("", PH1, bboxes=[(0.1, 0.2, 0.3, 0.4, 0.5)])),
    ("box_arity_0", "empty tuple as a box", Case("", PH1, bboxes=[()])),
    ("box_in_list_bad_arity", "bad box inside a list of boxes", Case("", PH1, bboxes=[[(1, 2), (0.1, 0.2)]])),
    ("text_image_count_2v1", "2 texts, 1 image", Case("", ["a", "b"], images=["camera.png"])),
    ("text_image_count_1v2", "1 text, 2 images", Case("", "a", images=["camera.png", "rocket.jpg"])),
    ("text_image_count_3v2", "3 texts, 2 images", Case("", ["a", "b", "c"], images=["camera.png", "rocket.jpg"])),
    ("batch_bboxes_count", "batch: number of bbox lists != number of texts",
     Case("", [PH1, PH1], bboxes=[[(1, 2)]])),
    ("batch_bboxes_flat", "batch: bboxes given in single-text form (a box where a list is required)",
     Case("", [PH1], bboxes=[(1, 2)])),
    ("batch_bad_box", "batch: a bad box in the second text", Case("", [PH1, PH1], bboxes=[[(1, 2)], [(1, 2, 3)]])),
    ("batch_x2_le_x1", "batch: x2 <= x1 in the second text",
     Case("", [PH1, PH1], bboxes=[None, [(0.9, 0.1, 0.1, 0.9)]])),
    ("batch_text_none_item", "a None inside the batch of texts", Case("", ["a", None])),
    ("empty_images_list", "an empty list of images with one text", Case("", "a", images=[])),
    ("empty_batch", "an empty batch of texts", Case("", [])),
    ("empty_batch_with_images", "an empty batch of texts with an empty image list", Case("", [], images=[])),
]

PY_NOTES = [
    ("bbox_list_instead_of_tuple", "a Python list of 4 floats is a LIST OF BOXES, not a box",
     lambda p: p(text=PH1, bboxes=[[0.1, 0.2, 0.3, 0.4]])),
    ("bbox_not_list", "single-text bboxes given as a tuple instead of a list",
     lambda p: p(text=PH1, bboxes=(1, 2))),
    ("bbox_list_pair", "a 2-int box given as a list [1, 2] (a list of two non-tuples)",
     lambda p: p(text=PH1, bboxes=[[1, 2]])),
    ("bbox_string", "a box given as a string", lambda p: p(text=PH1, bboxes=["1,2"])),
    ("batch_bboxes_tuple", "batched bboxes given as a tuple", lambda p: p(text=[PH1], bboxes=([(1, 2)],))),
    ("bbox_bools", "a box of two bools (bool is an int subclass)", lambda p: p(text=PH1, bboxes=[(True, False)])),
    ("text_not_str", "text is an int", lambda p: p(text=5)),
]

# Accepted by HF without error, but dubious. (name, about, Case)
ACCEPTED = [
    ("index_out_of_range", "patch index >= 1024 becomes `<patch_index_1024>`, which is not a token: tokenised as text",
     Case("", PH1, bboxes=[(0, 1024)])),
    ("index_huge", "patch index 12345 (5 digits) tokenised as text", Case("", PH1, bboxes=[(12345, 3)])),
    ("index_negative", "negative index: str(-1).zfill(4) = '-001', tokenised as text", Case("", PH1, bboxes=[(-1, 5)])),
    ("index_reversed", "ul index > lr index", Case("", PH1, bboxes=[(1000, 3)])),
    ("float_above_one", "coordinates > 1 give indices >= 1024", Case("", PH1, bboxes=[(0.5, 0.5, 1.5, 1.5)])),
    ("float_negative", "negative coordinates give negative indices", Case("", PH1, bboxes=[(-0.5, -0.5, 0.5, 0.5)])),
    ("float_x_beyond", "x2 > 1 wraps into the next row of patches", Case("", PH1, bboxes=[(0.9, 0.1, 1.2, 0.2)])),
    ("float_tiny_neg", "tiny negative coordinate: floor gives -1", Case("", PH1, bboxes=[(-1e-12, 0.0, 0.5, 0.5)])),
    ("bboxes_empty_with_phrases", "bboxes=[] with phrases present: no count check, nothing inserted",
     Case("", PH2, bboxes=[])),
    ("truncation_cuts_image_block",
     "max_length shorter than the image block: ids are truncated, then the 64 placeholder ids are spliced back in, "
     "so input_ids (66) and attention_mask (10) and image mask (67) differ in length",
     Case("", "<grounding>An image of", images=["camera.png"], truncation=True, max_length=10)),
    ("truncation_cuts_image_block_batch", "as above, in a batch",
     Case("", ["<grounding>An image of", "x"], images=["camera.png", "rocket.jpg"], truncation=True, max_length=10)),
    ("padding_side_kwarg_ignored_with_images",
     "with images the batch is padded by tokenizer.padding_side (right), ignoring padding_side='left'",
     Case("", ["a b c d e", "a"], images=["camera.png", "rocket.jpg"], padding_side="left")),
    ("single_text_image_pad_max_ignored", "single string + image: padding='max_length' does not pad",
     Case("", "a", images=["camera.png"], padding="max_length", max_length=90)),
    ("num_image_tokens_negative", "num_image_tokens=-1", Case("", "a", images=["camera.png"], num_image_tokens=-1)),
    ("first_image_token_id_out_of_vocab", "first_image_token_id beyond the vocabulary",
     Case("", "a", images=["camera.png"], first_image_token_id=70000)),
    ("image_with_text_containing_image_tags", "user text with its own <image> tags, with an image",
     Case("", "<image></image> a", images=["camera.png"])),
    ("image_no_special_user_tags", "add_special_tokens=False with an image: placeholders spliced at offset 1",
     Case("", "<image> x y", images=["camera.png"], add_special_tokens=False, num_image_tokens=2)),
    ("max_length_without_truncation", "max_length without truncation=True or padding: HF still truncates to max_length",
     Case("", "<grounding>An image of a long text here", max_length=3)),
]

DECODE_ERRORS = [
    ("decode_out_of_vocab", "id 65037 (vocab size)", [[0, 712, 65037]]),
    ("decode_negative", "negative id", [[0, -1]]),
    ("decode_huge", "id 2**40", [[2 ** 40]]),
]


def _err(e):
    return {"type": type(e).__name__, "message": str(e)}


def gen_errors(proc, vers, images, out_dir):
    rejected = []
    for name, about, case in REJECTED:
        case.name = name
        try:
            call(proc, images, case)
        except Exception as e:  # noqa: BLE001 - recording what HF raises is the point
            rec = case.input_json()
            rec.update({"call": "processor", "about": about, "error": _err(e), "bboxes_repr": repr(case.bboxes)})
            rejected.append(rec)
            continue
        raise SystemExit(f"errors.json: HF accepted {name}; move it to ACCEPTED")
    for name, about, ids in DECODE_ERRORS:
        try:
            out = proc.batch_decode(ids, skip_special_tokens=True)
        except Exception as e:  # noqa: BLE001
            rejected.append({"name": name, "call": "batch_decode", "ids": ids, "about": about, "error": _err(e)})
            continue
        rejected.append({"name": name, "call": "batch_decode", "ids": ids, "about": about + " (ACCEPTED by HF)",
                         "error": None, "output": out})
    accepted = []
    for name, about, case in ACCEPTED:
        case.name = name
        rec = run_case(proc, images, case)
        rec["about"] = about
        rec["bboxes_repr"] = repr(case.bboxes)
        accepted.append(rec)
    notes = []
    for name, about, fn in PY_NOTES:
        try:
            fn(proc)
            notes.append(f"{name}: {about}: ACCEPTED by HF")
        except Exception as e:  # noqa: BLE001
            notes.append(f"{name}: {about}: {type(e).__name__}: {e}")
    write_json(os.path.join(out_dir, "errors.json"), {
        "versions": vers, "rejected": rejected, "accepted_suspicious": accepted, "notes": notes,
    })
    return len(rejected), len(accepted)
