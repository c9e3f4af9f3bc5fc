"""The `price_overrides` table: a project's own prices for the models matching a glob.

Rates are integer nano-USD per million tokens (exact on both databases, like every
amount of money here); a null cache rate means the input rate.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKeyConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import Id, UtcTimeStamp, utcnow
from chatledger.pricing import Rates


class PriceOverride(Base):
    __tablename__ = "price_overrides"
    __table_args__ = (
        ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        Index(None, "project_id", "effective_from"),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    # None: the override applies to the matching models of every provider.
    provider: Mapped[str | None] = mapped_column(String(64))
    model_pattern: Mapped[str] = mapped_column(String(200))
    effective_from: Mapped[datetime] = mapped_column(UtcTimeStamp)
    input_per_mtok_nano: Mapped[int] = mapped_column(BigInteger)
    output_per_mtok_nano: Mapped[int] = mapped_column(BigInteger)
    cache_read_per_mtok_nano: Mapped[int | None] = mapped_column(BigInteger)
    cache_write_per_mtok_nano: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)

    @property
    def rates(self) -> Rates:
        return Rates(
            input=self.input_per_mtok_nano,
            output=self.output_per_mtok_nano,
            cache_read=self.cache_read_per_mtok_nano,
            cache_write=self.cache_write_per_mtok_nano,
        )
