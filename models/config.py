"""The architecture of ReAl as one frozen dataclass, passed whole (nanoGPT's GPTConfig).

Values come from params.yaml's `model` section through `ModelConfig.from_dict`; the profiles
(`smoke`, `default`, and the paper's values in docs/model.md) only change these numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

BACKBONES = ("resnet50", "resnet18", "tiny")
RESIDUAL_KINDS = ("naive", "registered")
GEN_LOSSES = ("answer", "token")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet50"        # "resnet50" | "resnet18" | "tiny" (a few convs, for smoke/tests)
    image_size: int = 256             # crop size fed to the encoders
    n_queries: int = 8                # learned queries per image in each projection module
    proj_layers: int = 1              # transformer-decoder layers in each projection module
    n_embd: int = 256                 # GPT-2 width (paper: 768, GPT-2 small)
    n_layer: int = 4
    n_head: int = 4
    vocab_size: int = 2000            # set from the tokenizer at build time
    max_question_len: int = 32        # tokens, question
    max_answer_len: int = 64          # tokens, answer including the final eos
    use_residual: bool = True         # False: the baseline, E_R and its projection do not exist
    use_rfa: bool = True              # residual feature alignment loss L_con (needs use_residual)
    residual_kind: str = "naive"      # "naive" | "registered": which shard column training feeds
    residual_input: str = "residual"  # "residual": E_R sees main − ref | "stack": [main, ref, main − ref]
    rfa_weight: float = 1.0           # λ in L_gen + λ·L_con
    rfa_stop_grad: bool = False       # True: L_con trains the residual branch only (docs/model.md)
    dropout: float = 0.1
    gen_loss: str = "answer"          # "answer": the paper's per-answer 1/T mean | "token": per token
    finding_heads: bool = False       # per-finding presence/level/change heads + L_find (models/finding_heads.py)
    finding_weight: float = 1.0       # weight of L_find
    change_weight: float = 4.0        # added/missing/level against unchanged in the change head
    attribute_heads: bool = False     # per image its view, per finding its type and place words (finding_heads)
    pair_states: bool = False         # E_R also predicts both images' finding states; the change they imply joins the change logits
    finding_tokens: bool = False      # the heads' beliefs as one decoder prefix token per finding
    finding_forcing: float = 0.0      # share of training pairs whose tokens carry the known targets
    decode_with_heads: bool = False   # a difference answer states exactly the heads' change set
    swap_average: bool = False        # inference: average the change beliefs of (main, ref) and the pair read backwards
    amif_align: bool = False          # AMiF: contrastive image/residual <-> finding/change-set text (models/amif.py)
    amif_weight: float = 0.1          # weight of L_align
    amif_negatives: int = 4           # one-cell hard negatives per pair (0: the batch's own texts only)
    amif_tau: float = 0.1             # temperature of the alignment logits
    gated_fusion: bool = False        # AMiF: image tokens attend to the answer vocabulary through a learned gate
    pretrained_resnet: str | None = None  # local torchvision state_dict (.pth) for E_I and E_R
    pretrained_gpt2: str | None = None    # local GPT-2 folder (save_pretrained layout)

    def __post_init__(self):
        # fail at construction, not deep inside a forward pass
        if self.backbone not in BACKBONES:
            raise ValueError(f"model.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.residual_kind not in RESIDUAL_KINDS:
            raise ValueError(f"model.residual_kind must be one of {RESIDUAL_KINDS}, got {self.residual_kind!r}")
        if self.residual_input not in ("residual", "stack"):
            raise ValueError(f"model.residual_input must be residual or stack, got {self.residual_input!r}")
        if self.gen_loss not in GEN_LOSSES:
            raise ValueError(f"model.gen_loss must be one of {GEN_LOSSES}, got {self.gen_loss!r}")
        if (self.finding_tokens or self.decode_with_heads or self.swap_average or self.attribute_heads) and not self.finding_heads:
            raise ValueError("model.finding_tokens, decode_with_heads, swap_average and attribute_heads need model.finding_heads")
        if self.pair_states and not (self.finding_heads and self.use_residual):
            raise ValueError("model.pair_states needs model.finding_heads and model.use_residual")
        if self.amif_negatives < 0 or self.amif_tau <= 0:
            raise ValueError("model.amif_negatives must be >= 0 and model.amif_tau > 0")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.use_rfa and not self.use_residual:
            raise ValueError("model.use_rfa needs model.use_residual (L_con aligns the residual branch)")
        if min(self.n_queries, self.max_question_len, self.max_answer_len, self.image_size) < 1:
            raise ValueError("model sizes (n_queries, max lengths, image_size) must be positive")

    @property
    def n_prefix(self) -> int:
        """Image tokens in front of the question: residual (if any), reference, main."""
        from assets.finding_states import N_FINDINGS

        return self.n_queries * (3 if self.use_residual else 2) + (N_FINDINGS if self.finding_tokens else 0)

    @property
    def n_positions(self) -> int:
        """The longest sequence GPT-2 sees: prefix + question + bos/answer."""
        return self.n_prefix + self.max_question_len + self.max_answer_len

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Strict: an unknown key is a typo in params.yaml, not something to ignore."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
